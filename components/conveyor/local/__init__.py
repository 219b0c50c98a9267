"""The embedded default: real BigQuery and GCS emulators on this machine, and their demo data.

    from conveyor.local import LocalStack
    info = LocalStack().up()      # or: conveyor local up
    info.activate()               # conveyor clients (and kfp.local tasks) now use the emulators
"""

from conveyor.local.stack import LocalStack, StackInfo, default_root

__all__ = ["LocalStack", "StackInfo", "default_root"]
