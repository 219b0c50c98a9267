"""Train: Keras models over streamed Parquet, with the fitted preprocessing inside the exported
SavedModel. Logic: `conveyor.train.train` (imports TensorFlow; one worker with `model.fit`),
`conveyor.train.distributed` (several workers, a custom loop), both under the same
`conveyor.train.epochs.EpochPolicy` (no TensorFlow); export in `conveyor.train.export`. KFP
component: `conveyor.train.component.train`.
"""
