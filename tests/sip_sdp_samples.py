"""SDP bodies as real SIP user agents send them (written after their traces), for the SDP and media tests."""


def crlf(text):
    return text.strip("\n").replace("\n", "\r\n") + "\r\n"


# baresip 1.0.0 (Debian) with opus, G.722 and G.711 loaded: its INVITE's offer
BARESIP = crlf("""
v=0
o=- 2106397424 2950451136 IN IP4 10.1.0.11
s=-
c=IN IP4 10.1.0.11
t=0 0
m=audio 10140 RTP/AVP 96 9 0 8 101
b=AS:96
a=rtpmap:96 opus/48000/2
a=fmtp:96 stereo=1;sprop-stereo=1
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv
a=label:1
a=rtcp-rsize
a=ssrc:3302011542 cname:bd1f1bd5-3b39-4d8e-9ee3-2cbfc6c9d14b
a=ptime:20
""")

# Linphone 4.x desktop: session-level ICE and rtcp-xr, three telephone-event rates, a video stream
LINPHONE = crlf("""
v=0
o=alice 3019 2476 IN IP4 192.168.1.20
s=Talk
c=IN IP4 192.168.1.20
t=0 0
a=ice-pwd:31ec21eb38b2ec6d36e8dc7b
a=ice-ufrag:8ec5e8b2
a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics
a=record:off
m=audio 7078 RTP/AVP 96 97 98 0 8 18 101 99 100
a=rtpmap:96 opus/48000/2
a=fmtp:96 useinbandfec=1
a=rtpmap:97 speex/16000
a=fmtp:97 vbr=on
a=rtpmap:98 speex/8000
a=fmtp:98 vbr=on
a=fmtp:18 annexb=yes
a=rtpmap:101 telephone-event/48000
a=rtpmap:99 telephone-event/16000
a=rtpmap:100 telephone-event/8000
a=rtcp:7079
a=candidate:1 1 UDP 2130706431 192.168.1.20 7078 typ host
a=candidate:1 2 UDP 2130706430 192.168.1.20 7079 typ host
a=rtcp-fb:* trr-int 1000
a=rtcp-fb:* ccm tmmbr
m=video 9078 RTP/AVP 96 97
a=rtpmap:96 VP8/90000
a=rtpmap:97 H264/90000
a=fmtp:97 profile-level-id=42801F
a=rtcp:9079
a=rtcp-fb:* trr-int 1000
a=rtcp-fb:96 nack pli
""")

# Yealink T46S desk phone: G.711 first, G.729 and G.722 after, telephone-event's fmtp before its rtpmap
YEALINK = crlf("""
v=0
o=- 20045 20045 IN IP4 192.168.0.50
s=SDP data
c=IN IP4 192.168.0.50
t=0 0
m=audio 11796 RTP/AVP 0 8 18 9 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:18 G729/8000
a=fmtp:18 annexb=no
a=rtpmap:9 G722/8000
a=fmtp:101 0-15
a=rtpmap:101 telephone-event/8000
a=ptime:20
a=sendrecv
""")

# Polycom VVX configured for Europe: PCMA first, static payload types without rtpmap, ptime 30
POLYCOM_ALAW = crlf("""
v=0
o=- 1600259713 1600259713 IN IP4 172.16.5.21
s=Polycom IP Phone
c=IN IP4 172.16.5.21
t=0 0
a=sendrecv
m=audio 2222 RTP/AVP 8 0 127
a=rtpmap:127 telephone-event/8000
a=ptime:30
""")

# a Yealink putting the call on hold (re-INVITE): sendonly, version bumped
YEALINK_HOLD = YEALINK.replace("o=- 20045 20045", "o=- 20045 20046").replace("a=sendrecv", "a=sendonly")

# a Cisco 7940 (SIP firmware 8.x), RFC 2543 hold: the connection address 0.0.0.0
CISCO_OLD_HOLD = crlf("""
v=0
o=CiscoSystemsSIP-IPPhone-UserAgent 17187 11506 IN IP4 192.168.10.30
s=SIP Call
c=IN IP4 0.0.0.0
t=0 0
m=audio 27624 RTP/AVP 0 8 18 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:18 G729/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-11
""")

# a Grandstream GXP resuming after hold: direction before the rtpmaps, LF line ends only
GRANDSTREAM = """v=0
o=1001 8000 8001 IN IP4 10.0.0.40
s=SIP Call
c=IN IP4 10.0.0.40
t=0 0
m=audio 5004 RTP/AVP 0 101
a=sendrecv
a=rtpmap:0 PCMU/8000
a=ptime:20
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
"""

# a softphone that only has Opus and G.722 (no G.711): not acceptable
WIDEBAND_ONLY = crlf("""
v=0
o=- 1 1 IN IP4 10.0.0.9
s=-
c=IN IP4 10.0.0.9
t=0 0
m=audio 4000 RTP/AVP 111 9
a=rtpmap:111 opus/48000/2
a=rtpmap:9 G722/8000
""")

# WebRTC-style offer: SRTP-only profile (upbx has no SRTP): not acceptable
SRTP_ONLY = crlf("""
v=0
o=- 46117317 2 IN IP4 127.0.0.1
s=-
c=IN IP4 198.18.0.9
t=0 0
m=audio 9 UDP/TLS/RTP/SAVPF 0 8
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
""")

ALL_GOOD = {"baresip": BARESIP, "linphone": LINPHONE, "yealink": YEALINK, "polycom": POLYCOM_ALAW,
            "yealink-hold": YEALINK_HOLD, "cisco-hold": CISCO_OLD_HOLD, "grandstream": GRANDSTREAM}
