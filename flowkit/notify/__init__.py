"""Notifications: an outbox row per notifiable audit event (:mod:`.outbox`), delivered after
commit by a sender thread (:mod:`.sender`) through notifiers (:mod:`.notifiers`), which a
flow declares with ``notify=[Webhook(...), Log()]`` (:mod:`.config`)."""

from .config import Log, Webhook

__all__ = ["Log", "Webhook"]
