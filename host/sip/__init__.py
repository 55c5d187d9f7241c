"""SIP at a host's edge: SIP phones as extensions, sans-IO (docs/sip.md)."""
