"""Promote or roll back a challenger: the rule (`rule`), its offline evidence and its effect on
the base path's labels, Vertex AI and KServe (`promote`). KFP components:
`conveyor.promote.component.promote` and `start_canary`. The rule: docs/promotion.md.
"""
