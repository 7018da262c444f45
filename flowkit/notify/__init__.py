"""Notifications: an outbox row per notifiable audit event (:mod:`.outbox`), delivered after
commit by a sender thread (:mod:`.sender`) through notifiers (:mod:`.notifiers`), which a
flow declares with ``notify=[Webhook(...), Log(), page_oncall]`` (:mod:`.config`); a Python
callable runs on a worker (:mod:`.calls`)."""

from .config import Call, Log, Webhook

__all__ = ["Call", "Log", "Webhook"]
