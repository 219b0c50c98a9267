"""TensorFlow imported without its start-up banner on a CPU machine.

Importing TensorFlow and touching its devices writes lines from native code straight to file
descriptor 2, before (and so regardless of) TF_CPP_MIN_LOG_LEVEL: the oneDNN notice, "Could not
find cuda drivers", the CPU-instructions advice and, on a machine without a GPU,
"failed call to cuInit". A user who runs `conveyor serve` sees them as errors. `tensorflow()`
imports TensorFlow and lists its devices with descriptor 2 captured, then writes back every
captured line that is not one of those known notices: anything else TensorFlow says (a real
error, a warning about the model) still reaches stderr.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from types import ModuleType

#: Native start-up notices that carry nothing for a user of a CPU machine.
NOTICES = re.compile("|".join((
    r"All log messages before absl::InitializeLog\(\) is called",
    r"oneDNN custom operations are on",
    r"Could not find cuda drivers on your machine",
    r"failed call to cuInit",
    r"cpu_feature_guard\.cc",
    r"^To enable the following instructions: .*rebuild TensorFlow",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
    r"computation placer already registered",
    r"TF-TRT Warning: Could not find TensorRT",
)))


def kept(text: str) -> str:
    """`text` without the lines that are known start-up notices."""
    return "".join(line for line in text.splitlines(keepends=True) if not NOTICES.search(line))


@contextlib.contextmanager
def filtered_stderr() -> Iterator[None]:
    """Capture file descriptor 2 (native writes included) for the block; afterwards write back
    what `kept` keeps. Nothing is lost if the block raises."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            rest = kept(capture.read().decode("utf-8", errors="replace"))
            if rest:
                sys.stderr.write(rest)
                sys.stderr.flush()


def tensorflow() -> ModuleType:
    """TensorFlow, imported and its devices initialised without the start-up notices."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    with filtered_stderr():
        import tensorflow as tf

        tf.config.list_physical_devices()
    return tf
