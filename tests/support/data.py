"""The tests' data: the package's mixed-type demo set, and rows as a JSON client would send them."""
from app.demo import MIXED_FEATURES as FEATURES, mixed_frame  # noqa: F401
from app.frames import records as to_records  # noqa: F401
