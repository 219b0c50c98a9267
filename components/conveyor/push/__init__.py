"""Push: blessed models only, after an infra check, as a new version under a model base path
(local or gs://) that readers never see half-written. KFP component:
`conveyor.push.component.push`.
"""
