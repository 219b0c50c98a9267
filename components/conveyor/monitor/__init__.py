"""Serving-data drift: a time window of prediction logs (or a BigQuery table of serving traffic)
against the served version's training statistics (`conveyor.monitor.monitor`, over `window`,
`served`, `traffic` and `sources`)."""
