"""Validate: a Great Expectations data gate with statistics, drift and skew.

Logic: `conveyor.validate.validate.validate_dataset` (plain Python, no KFP), built from
`conveyor.stats` (streaming statistics), `suite` (specs, GX suites, inference), `checks` (chunked GX
runs), `drift` (Jensen-Shannon / L-infinity) and `report` (offline HTML). KFP component:
`conveyor.validate.component.validate`.
"""
