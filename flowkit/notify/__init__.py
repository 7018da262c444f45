"""Notifications: an outbox row per notifiable audit event (:mod:`.outbox`), delivered after
commit by a sender thread (:mod:`.sender`) through notifiers (:mod:`.notifiers`)."""
