"""Batch prediction: a pushed SavedModel over a Dataset split, predictions written to BigQuery.
Logic: `conveyor.predict.batch.predict_to_bigquery`. KFP component:
`conveyor.predict.component.batch_predict`."""
