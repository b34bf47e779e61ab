"""daemonkit's process supervisor: keeps named programs alive (``daemonkit supervise``)."""
