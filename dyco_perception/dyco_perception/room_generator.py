"""Moved to `dyco_perception.data.room_generator` (issue 21). This alias stays for the importers
outside this change's reach (`tools/make_bag.py`, `tests/test_node.py`); import the new path."""

from dyco_perception.data.room_generator import generate_room

__all__ = ["generate_room"]
