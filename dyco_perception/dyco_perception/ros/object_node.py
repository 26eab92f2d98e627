"""segment_node's object map (`objects.*` parameters): persistent object ids on the instances and
in the labelled cloud, the latched `segmentation/objects` topic, and two services:

    segmentation/query_objects  dyco_msgs/srv/QueryObjects  (class, region, confidence, one id,
                                                             optionally the objects' points)
    segmentation/reset_objects  dyco_msgs/srv/ResetObjects  (forget every object)

A mixin of SegmentationCore (uses its settings, segmenter, logger, counts and publisher factory).
The worker thread updates the map, service callbacks read it: one lock guards it. A map in
another frame, or a stamp older than the previous map's (a bag restarted, a new session), resets
the map, logged and counted as `objects_reset`.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Header

from dyco_msgs.msg import ObjectArray
from dyco_msgs.srv import QueryObjects, ResetObjects
from dyco_perception.objects import ObjectMap, ObjectMapError, Observation
from dyco_perception.ros import outputs

TOPIC_OBJECTS = "segmentation/objects"
SERVICE_QUERY = "segmentation/query_objects"
SERVICE_RESET = "segmentation/reset_objects"


def stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


class ObjectMapNode:
    """The object-map part of the node; `object_map` is None when `objects.enabled` is false
    (or before `_make_object_map`, e.g. in a node variant that does not call it)."""

    object_map: ObjectMap | None = None
    _objects_pub: Any = None
    _association_s = 0.0
    _objects_frame = ""  # the frame of the last map tracked, kept across resets

    def _make_object_map(self) -> None:
        """The map, its latched topic and its services (after the model is loaded)."""
        self._objects_lock = threading.Lock()
        self._objects_pub = None
        config = self.settings.objects
        self.object_map = (
            None
            if config is None
            else ObjectMap(config, num_classes=len(self.segmenter.card.classes))
        )
        if self.object_map is None:
            return
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        self._objects_pub = self._create_output_publisher(ObjectArray, TOPIC_OBJECTS, latched)
        self._output_publishers.append(self._objects_pub)
        self._query_service = self.create_service(
            QueryObjects, SERVICE_QUERY, self._on_query_objects
        )
        self._reset_service = self.create_service(
            ResetObjects, SERVICE_RESET, self._on_reset_objects
        )

    def _track_objects(
        self, labelled: outputs.Labelled, header: Any, settings: Any
    ) -> outputs.Labelled:
        """Associate this map's instances with the objects; sets `labelled.object_ids`."""
        if self.object_map is None:
            return labelled
        observations = [Observation.of_instance(i, labelled.xyz) for i in labelled.instances]
        with self._objects_lock:
            self.object_map.config = settings.objects  # parameters may change at run time
            try:
                update = self.object_map.update(
                    observations, labelled.xyz, stamp_ns(header), header.frame_id, roi=settings.roi
                )
            except ObjectMapError as exc:
                self.get_logger().warning(f"object map reset: {exc}")
                with self._lock:
                    self.counts["objects_reset"] += 1
                self.object_map.reset()
                update = self.object_map.update(
                    observations, labelled.xyz, stamp_ns(header), header.frame_id, roi=settings.roi
                )
        if update.voxel_size_changed:
            old, new = update.voxel_size_changed
            self.get_logger().warning(
                f"objects.voxel_size changed from {old} to {new} m: the objects' voxels were "
                "re-keyed onto the new grid from their points; this map counts as new evidence"
            )
        self._objects_frame = header.frame_id
        labelled.object_ids = update.object_ids
        self._association_s = update.seconds
        self.get_logger().debug(
            f"objects: {len(self.object_map.objects)} (created {update.created}, retired "
            f"{update.retired}, merged {update.merged}, split {update.split}) in "
            f"{1000 * update.seconds:.1f} ms"
        )
        return labelled

    def _publish_objects(self, header: Any) -> None:
        if self._objects_pub is None:
            return
        with self._objects_lock:
            msg = outputs.objects_msg(
                header, self.object_map.confirmed_objects(), list(self.segmenter.card.classes)
            )
        self._objects_pub.publish(msg)

    def _object_map_diagnostics(self, counts: dict[str, int]) -> dict[str, Any]:
        """Object counts, the last association time and resets, for /diagnostics."""
        if self.object_map is None:
            return {}
        with self._objects_lock:
            return {
                "objects": len(self.object_map.objects),
                "objects_confirmed": len(self.object_map.confirmed_objects()),
                "objects_last_association_ms": round(1000 * self._association_s, 1),
                "objects_reset": counts.get("objects_reset", 0),
            }

    # ---- services ---------------------------------------------------------------------------
    def _query_filters(self, request: Any) -> dict[str, Any]:
        """The core query's arguments; ValueError says what is wrong with the request."""
        names = list(self.segmenter.card.classes)
        unknown = [n for n in request.class_names if n not in names]
        if unknown:
            raise ValueError(f"unknown class names {unknown}; the model's classes: {names}")
        if not 0.0 <= request.min_confidence <= 1.0:
            raise ValueError(f"min_confidence must lie in [0, 1], got {request.min_confidence}")
        region = None
        if request.use_region:
            lo, hi = (np.array([p.x, p.y, p.z]) for p in (request.region_min, request.region_max))
            if not np.all(lo <= hi):
                raise ValueError(f"region_min {lo.tolist()} exceeds region_max {hi.tolist()}")
            region = (lo, hi)
        return {
            "class_ids": [names.index(n) for n in request.class_names] or None,
            "region": region,
            "min_confidence": request.min_confidence,
            "object_id": request.object_id,
        }

    def _on_query_objects(self, request: Any, response: Any) -> Any:
        try:
            filters = self._query_filters(request)
            with self._objects_lock:
                found = self.object_map.query(**filters)
                response.objects = outputs.objects_msg(
                    Header(), found, list(self.segmenter.card.classes)
                ).objects
                response.header = self._object_map_header()
                if request.with_points:
                    response.points = outputs.object_points_msg(response.header, found)
        except ValueError as exc:
            response.success, response.message = False, str(exc)
            return response
        response.success = True
        return response

    def _object_map_header(self) -> Header:
        """The newest map's stamp and frame; after a reset, now and the last map's frame."""
        stamp = self.object_map.last_stamp
        if stamp is None:
            return Header(
                stamp=self.get_clock().now().to_msg(),
                frame_id=self.object_map.frame or self._objects_frame,
            )
        return Header(
            stamp=Time(sec=stamp // 1_000_000_000, nanosec=stamp % 1_000_000_000),
            frame_id=self.object_map.frame or self._objects_frame,
        )

    def _on_reset_objects(self, request: Any, response: Any) -> Any:
        with self._objects_lock:
            response.num_removed = self.object_map.reset()
            header = self._object_map_header()  # now, in the frame of the last map
        self._publish_objects(header)  # the latched topic must not keep stale objects
        self.get_logger().info(f"object map reset on request: {response.num_removed} removed")
        return response
