//! The kernel's link table over `NETLINK_ROUTE`: what XDP programs an interface runs (the
//! read-back after every attach, see [`link`]), and a subscription to the link events of
//! interfaces that are created, changed and deleted ([`LinkWatch`]).
//!
//! Messages are built and parsed with `netlink-packet-route`; the socket is `netlink-sys`'s.
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use netlink_packet_route::link::{LinkAttribute, LinkMessage, LinkXdp};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// What the kernel says about one interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkState {
    /// Its index.
    pub ifindex: u32,
    /// The id of the XDP program attached in driver mode (`IFLA_XDP_DRV_PROG_ID`).
    pub xdp_driver: Option<u32>,
    /// The id of the XDP program attached in generic mode (`IFLA_XDP_SKB_PROG_ID`).
    pub xdp_generic: Option<u32>,
}

/// The interface named `name` as the kernel sees it now: `None` when there is none.
pub fn link(name: &str) -> io::Result<Option<LinkState>> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    // RTM_GETLINK by name (ifi_index 0 and IFLA_IFNAME): the kernel answers with one
    // RTM_NEWLINK, or an error (ENODEV when there is no such interface).
    let mut request = LinkMessage::default();
    request
        .attributes
        .push(LinkAttribute::IfName(name.to_owned()));
    let mut packet = NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::from(RouteNetlinkMessage::GetLink(request)),
    );
    packet.header.flags = NLM_F_REQUEST;
    packet.header.sequence_number = 1;
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0)?;
    loop {
        let (reply, _) = socket.recv_from_full()?;
        let mut offset = 0;
        while offset < reply.len() {
            let message: NetlinkMessage<RouteNetlinkMessage> =
                NetlinkMessage::deserialize(&reply[offset..]).map_err(io::Error::other)?;
            let length = message.header.length as usize;
            if message.header.sequence_number == 1 {
                match message.payload {
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) => {
                        return Ok(Some(link_state(&m)));
                    }
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            Some(code) if -code.get() == libc::ENODEV => Ok(None),
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                            None => Err(io::Error::other(format!(
                                "RTM_GETLINK {name}: an acknowledgement without the link"
                            ))),
                        };
                    }
                    _ => {}
                }
            }
            if length == 0 {
                break;
            }
            offset += length;
        }
    }
}

fn link_state(m: &LinkMessage) -> LinkState {
    let mut state = LinkState {
        ifindex: m.header.index,
        ..LinkState::default()
    };
    for attribute in &m.attributes {
        if let LinkAttribute::Xdp(xdp) = attribute {
            for x in xdp {
                match x {
                    LinkXdp::DrvProgId(id) if *id != 0 => state.xdp_driver = Some(*id),
                    LinkXdp::SkbProgId(id) if *id != 0 => state.xdp_generic = Some(*id),
                    _ => {}
                }
            }
        }
    }
    state
}

/// A link event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// RTM_NEWLINK: an interface was created or changed.
    New {
        /// Its name.
        name: String,
        /// Its index.
        ifindex: u32,
    },
    /// RTM_DELLINK: an interface was deleted.
    Deleted {
        /// Its name.
        name: String,
        /// The index it had.
        ifindex: u32,
    },
    /// The socket's buffer overflowed (ENOBUFS): events were lost, look at every interface.
    Lost,
}

/// `RTMGRP_LINK`: the multicast group of link events (`RTNLGRP_LINK`, 1, as a bit mask).
const RTMGRP_LINK: u32 = 1;

/// A `NETLINK_ROUTE` socket subscribed to link events, non-blocking: wait for it to be
/// readable (its fd, [`AsFd`]), then [`LinkWatch::read`].
pub struct LinkWatch {
    socket: Socket,
}

impl LinkWatch {
    /// Opens the socket and joins the link group.
    pub fn open() -> io::Result<LinkWatch> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind(&SocketAddr::new(0, RTMGRP_LINK))?;
        socket.set_non_blocking(true)?;
        Ok(LinkWatch { socket })
    }

    /// Every event queued on the socket (empty when none is).
    pub fn read(&mut self) -> io::Result<Vec<LinkEvent>> {
        let mut events = Vec::new();
        loop {
            match self.socket.recv_from_full() {
                Ok((bytes, _)) => parse_link_events(&bytes, &mut events),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(events),
                // The kernel dropped events because the buffer was full: the caller must look
                // at every interface again.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => events.push(LinkEvent::Lost),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl AsFd for LinkWatch {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl AsRawFd for LinkWatch {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// The link events in one datagram (several netlink messages may share it). A message that
/// does not parse is skipped, and reported as [`LinkEvent::Lost`] so that nothing is missed.
pub fn parse_link_events(bytes: &[u8], events: &mut Vec<LinkEvent>) {
    let mut offset = 0;
    while offset < bytes.len() {
        let message: NetlinkMessage<RouteNetlinkMessage> =
            match NetlinkMessage::deserialize(&bytes[offset..]) {
                Ok(m) => m,
                Err(_) => {
                    events.push(LinkEvent::Lost);
                    return;
                }
            };
        let length = message.header.length as usize;
        let name_of = |m: &LinkMessage| {
            m.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            })
        };
        match message.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) => {
                if let Some(name) = name_of(&m) {
                    events.push(LinkEvent::New {
                        name,
                        ifindex: m.header.index,
                    });
                }
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(m)) => {
                if let Some(name) = name_of(&m) {
                    events.push(LinkEvent::Deleted {
                        name,
                        ifindex: m.header.index,
                    });
                }
            }
            _ => {}
        }
        // Messages are 4-byte aligned within a datagram.
        let advance = (length + 3) & !3;
        if advance == 0 {
            return;
        }
        offset += advance;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(payload: RouteNetlinkMessage) -> Vec<u8> {
        let mut packet = NetlinkMessage::new(NetlinkHeader::default(), payload.into());
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        buf
    }

    fn link_message(name: &str, ifindex: u32, xdp: Vec<LinkXdp>) -> LinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = ifindex;
        m.attributes.push(LinkAttribute::IfName(name.into()));
        if !xdp.is_empty() {
            m.attributes.push(LinkAttribute::Xdp(xdp));
        }
        m
    }

    #[test]
    fn new_and_deleted_links_in_one_datagram_are_both_read() {
        let mut bytes = message(RouteNetlinkMessage::NewLink(link_message(
            "tgx0",
            12,
            vec![],
        )));
        bytes.extend(message(RouteNetlinkMessage::DelLink(link_message(
            "eth1",
            3,
            vec![],
        ))));
        let mut events = Vec::new();
        parse_link_events(&bytes, &mut events);
        assert_eq!(
            events,
            vec![
                LinkEvent::New {
                    name: "tgx0".into(),
                    ifindex: 12
                },
                LinkEvent::Deleted {
                    name: "eth1".into(),
                    ifindex: 3
                }
            ]
        );
    }

    #[test]
    fn a_datagram_that_does_not_parse_means_events_were_lost() {
        let mut events = Vec::new();
        parse_link_events(&[1, 2, 3], &mut events);
        assert_eq!(events, vec![LinkEvent::Lost]);
    }

    #[test]
    fn the_xdp_program_ids_of_each_mode_are_read() {
        let m = link_message(
            "tgx0",
            7,
            vec![
                LinkXdp::DrvProgId(41),
                LinkXdp::SkbProgId(0),
                LinkXdp::ProgId(41),
            ],
        );
        assert_eq!(
            link_state(&m),
            LinkState {
                ifindex: 7,
                xdp_driver: Some(41),
                xdp_generic: None
            }
        );
    }
}
