"""Preflight: check in seconds what would otherwise fail after ingest or training.

Logic: `conveyor.preflight.checks`. KFP component: `conveyor.preflight.component.preflight`.
"""
