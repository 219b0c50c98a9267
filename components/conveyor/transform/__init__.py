"""Transform: a declarative feature spec, and its preprocessing fitted on the train split.

Logic: `conveyor.transform.spec` (FeatureSpec, propose_spec) and `conveyor.transform.fit` (no
TensorFlow). KFP component: `conveyor.transform.component.transform`.
"""
