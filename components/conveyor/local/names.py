"""The pipeline's own words in a local run: step names for task folders and console lines, and
which steps did not run, and why.

A compiled pipeline names each task after its component, and a component used again gets a
suffix: the GPU branch's train is `train-2`, continuous training's drift branch has `train-3`
and `evaluate-3`. kfp.local names task folders and its records after those, so a CPU run's
folders and lines would read `train-3/` where the pipeline says "train". `StepNames` reads the
pipeline spec once:

- `shown[component]`: the step's name (`train`) for every copy of a component when no two
  copies can run in one run (each sits in another branch of one dsl.If/Elif/Else), else kfp's
  own name (two `validate` calls in a user's pipeline stay `validate` and `validate-2`);
- `naming()`: while active, kfp.local takes each task's folder and record name from `shown`
  (kfp asks `kfp.local.executor_input_utils.get_local_task_resource_name` for it; the function
  is replaced for the run and put back after; a kfp without it keeps its own names), and the
  components that ran are recorded;
- `not_run(failed)`: the steps that did not run, in pipeline order, each once, and the false
  conditions a user can name (`blessed`), leaving out a branch the run did not take because
  another of its dsl.If/Elif/Else ran (the GPU branch of a CPU run: its steps ran on the CPU
  branch, so nothing is said about it).
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

_PREFIX = "comp-"
_UNNAMED = re.compile(r"condition-\d+")


@dataclasses.dataclass(eq=False)
class _Node:
    """A task of the pipeline's DAG (a step, or a branch or sub-pipeline holding steps)."""

    label: str  # its name in the pipeline: dsl.If's name=, else the task's name
    component: str  # comp-...
    condition: bool  # a dsl.If/Elif/Else branch: runs only when its condition holds
    group: bool  # the DAG of one dsl.If/Elif/Else: at most one of its branches runs
    dag: bool = True  # a branch or sub-pipeline, not a step
    parent: _Node | None = None
    children: list[_Node] = dataclasses.field(default_factory=list)

    def path(self) -> list[_Node]:
        """From the root down to this node."""
        node: _Node | None = self
        out: list[_Node] = []
        while node is not None:
            out.append(node)
            node = node.parent
        return out[::-1]

    def leaves(self) -> Iterator[_Node]:
        """The steps in it (itself, for a step), in pipeline order."""
        if not self.dag:
            yield self
        for child in self.children:
            yield from child.leaves()


def _topological(dag) -> list[str]:
    """The DAG's task names, each after the tasks it depends on (ties by name)."""
    waiting = {name: set(task.dependent_tasks) & set(dag.tasks) for name, task in
               dag.tasks.items()}
    order: list[str] = []
    while waiting:
        ready = sorted(name for name, deps in waiting.items() if not deps) or sorted(waiting)[:1]
        for name in ready:
            order.append(name)
            del waiting[name]
        for deps in waiting.values():
            deps.difference_update(ready)
    return order


class StepNames:
    """See the module docstring."""

    def __init__(self, pipeline_spec):
        self._components = pipeline_spec.components
        self._root = _Node(label="", component="", condition=False, group=False)
        self._expand(self._root, pipeline_spec.root.dag)
        self._leaves = list(self._root.leaves())
        copies: dict[str, list[_Node]] = {}
        for leaf in self._leaves:
            copies.setdefault(self.step(leaf.component), []).append(leaf)
        self.shown: dict[str, str] = {}
        for step, leaves in copies.items():
            one_at_most = all(_exclusive(a, b) for i, a in enumerate(leaves)
                              for b in leaves[i + 1:])
            for leaf in leaves:
                self.shown[leaf.component] = step if one_at_most else _kfp_name(leaf.component)
        self.ran: set[str] = set()  # components that ran (naming() records them)
        self._given: dict[str, str] = {}
        self._lock = threading.Lock()

    def _expand(self, node: _Node, dag) -> None:
        for name in _topological(dag):
            task = dag.tasks[name]
            component = self._components[task.component_ref.name]
            inner = component.dag if component.WhichOneof("implementation") == "dag" else None
            child = _Node(label=task.task_info.name or name, component=task.component_ref.name,
                          condition=bool(task.trigger_policy.condition),
                          group=inner is not None
                          and task.component_ref.name.startswith(f"{_PREFIX}condition-branches")
                          and all(t.trigger_policy.condition for t in inner.tasks.values()),
                          dag=inner is not None, parent=node)
            node.children.append(child)
            if inner is not None:
                self._expand(child, inner)

    def step(self, component: str) -> str:
        """kfp's name without the suffixes of a copy: comp-train-2-2 -> train (a suffix counts
        only where the component without it exists: a step named `step-2` keeps its name)."""
        name = component
        while (stripped := re.sub(r"-\d+$", "", name)) != name and stripped in self._components:
            name = stripped
        return _kfp_name(name)

    def task_name(self, component: str) -> str:
        """The name a task of `component` gets in this run: `shown`, unless another component
        already took that name in this run (then kfp's own): two tasks never share a folder."""
        with self._lock:
            if component not in self._given:
                taken = set(self._given.values())
                candidates = [self.shown.get(component, _kfp_name(component)),
                              _kfp_name(component)]
                name = next((c for c in candidates if c not in taken), None)
                number = 2
                while name is None or name in taken:
                    name, number = f"{_kfp_name(component)}-again-{number}", number + 1
                self._given[component] = name
            self.ran.add(component)
            return self._given[component]

    def output_types(self, task: str) -> dict[str, str]:
        """Output artifact name -> KFP schema title (`system.HTML`...) of the task named
        `task` in this run ({} for a name this run did not give)."""
        component = next((c for c, n in self._given.items() if n == task), f"{_PREFIX}{task}")
        spec = self._components.get(component)
        if spec is None:
            return {}
        return {name: out.artifact_type.schema_title
                for name, out in spec.output_definitions.artifacts.items()}

    @contextmanager
    def naming(self) -> Iterator[None]:
        """kfp.local names tasks by `task_name` while active (see the module docstring)."""
        try:
            from kfp.local import executor_input_utils as kfp_names
        except ImportError:  # another kfp: its own names
            yield
            return
        original = getattr(kfp_names, "get_local_task_resource_name", None)
        if original is None:
            yield
            return
        kfp_names.get_local_task_resource_name = self.task_name  # type: ignore[assignment]
        try:
            yield
        finally:
            kfp_names.get_local_task_resource_name = original  # type: ignore[assignment]

    def not_run(self, failed: bool,
                started: Sequence[str] = ()) -> tuple[list[str], list[str]]:
        """(the steps that did not run, in pipeline order; the false conditions that kept them
        from running, by their names in the pipeline; none when the run `failed`). `started`:
        the task names seen starting, for a kfp where `naming()` could not record them."""
        ran = set(self.ran) or {f"{_PREFIX}{name}" for name in started}
        ran_names = {self.shown.get(c, _kfp_name(c)) for c in ran} | set(started)
        steps: list[str] = []
        reasons: list[str] = []
        for leaf in self._leaves:
            name = self.shown[leaf.component]
            if leaf.component in ran or name in ran_names:
                continue
            if name not in steps:
                steps.append(name)
            if not failed:
                reason = self._false_condition(leaf, ran)
                if reason and reason not in reasons:
                    reasons.append(reason)
        return steps, reasons

    def _false_condition(self, leaf: _Node, ran: set[str]) -> str:
        """The name of the outermost branch above `leaf` in which nothing ran; '' when that is
        a branch the run did not take because another of its dsl.If/Elif/Else ran, or when
        the branch has no name of its own."""
        def ran_in(node: _Node) -> bool:
            return any(x.component in ran for x in node.leaves())

        for node in leaf.path():
            if node.condition and not ran_in(node):
                parent = node.parent
                if parent is not None and parent.group and any(
                        ran_in(sibling) for sibling in parent.children if sibling is not node):
                    return ""
                return "" if _UNNAMED.fullmatch(node.label) else node.label
        return ""


def _kfp_name(component: str) -> str:
    return component[len(_PREFIX):] if component.startswith(_PREFIX) else component


def _exclusive(a: _Node, b: _Node) -> bool:
    """Whether two steps can never both run: they sit in two branches of one
    dsl.If/Elif/Else."""
    pa, pb = a.path(), b.path()
    depth = 0
    while depth < min(len(pa), len(pb)) and pa[depth] is pb[depth]:
        depth += 1
    if depth == 0 or depth >= min(len(pa), len(pb)):
        return False
    fork, ca, cb = pa[depth - 1], pa[depth], pb[depth]
    return fork.group and ca.condition and cb.condition


def skip_line(steps: list[str], reasons: list[str], failed: bool) -> str:
    """The console's one line for the steps that did not run ('' when every step ran)."""
    if not steps:
        return ""
    if failed:
        why = "an earlier task failed"
    elif reasons:
        why = f"{', '.join(reasons)}: condition{'s' if len(reasons) > 1 else ''} false"
    else:
        why = "condition false"
    return f"  {'skip':<7} {', '.join(steps)}  ({why})"
