"""SIP phones and trunks: messages, registrar, dialogs and the B2BUA (sip-core), SDP and RTP media (sip-media)."""
