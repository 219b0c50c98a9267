"""Train: Keras models over streamed Parquet, with the fitted preprocessing inside the exported
SavedModel. Logic: `conveyor.train.train` (imports TensorFlow). KFP component:
`conveyor.train.component.train`.
"""
