"""Transform: a declarative feature spec, and its preprocessing fitted on the train split.

Logic: `conveyor.transform.spec` (FeatureSpec: the data model and its loading),
`conveyor.transform.propose` (propose_spec: the proposal rules) and `conveyor.transform.fit`
(no TensorFlow). KFP component: `conveyor.transform.component.transform`.
"""
