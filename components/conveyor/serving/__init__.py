"""A local model server speaking the TensorFlow Serving REST API (`conveyor serve`).

The request limits and the model-name rule live here, import-light, so the command line can
show the limits as defaults and refuse a bad name before anything loads.
"""

import re

from conveyor.errors import InputError

MAX_BODY_BYTES = 16 * 1024 * 1024  # a request body over this gets 413, before any parsing
MAX_INSTANCES = 10_000  # rows per request; bigger batches belong to batch prediction

# A model name is one path segment of /v1/models/{name}[:predict]: no '/', ':', '%', space or
# other character a client would have to escape, and not '.' or '..', which a client or proxy
# resolves away before the server sees the path.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


class ModelNameError(InputError):
    """A model name that no /v1/models/{name} URL reaches as it stands."""


def check_model_name(name: object) -> str:
    """`name` if requests reach it at /v1/models/{name} as it is written, else ModelNameError
    saying what a name may hold."""
    if isinstance(name, str) and MODEL_NAME.fullmatch(name):
        return name
    shown = repr(name) if not isinstance(name, str) or len(name) <= 60 else f"{name[:60]!r}..."
    raise ModelNameError(
        f"--model-name: {shown} is not a name requests can use in /v1/models/NAME as it stands; "
        "a model name is 1 to 200 ASCII letters, digits, '.', '_' or '-', starting with a "
        "letter or digit (no '/', ':', '%', spaces or other characters a URL would have to "
        "escape), e.g. 'penguins'")
