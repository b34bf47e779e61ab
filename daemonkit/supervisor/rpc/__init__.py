"""supervisord's XML-RPC interface: what supervisorctl and other clients speak."""
