//! Recognising an account whatever its address is spelled like: the same server reached
//! as `localhost` or `127.0.0.1`, on an explicit or a default port, over TLS or STARTTLS.
//! Two decisions rest on it: refusing a migration whose source and destination are one
//! account (mailshift would write into the server it promises only to read), and finding
//! an earlier migration's checkpoints again under another spelling.

use crate::endpoint::Endpoint;
use crate::ports::{FolderStatus, ServerIdentity};
use sha2::{Digest, Sha256};

/// What one logged-in session shows of its account, read without changing anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountProbe {
    pub endpoint: Endpoint,
    pub identity: ServerIdentity,
    /// STATUS of INBOX.
    pub inbox: Option<FolderStatus>,
    /// Every listed folder name (as the server spells it), sorted, with the delimiter.
    pub folders: Vec<String>,
    pub delimiter: Option<char>,
}

/// The address part that decides which server and user an endpoint names: host case
/// and the way the port was written do not matter.
pub fn same_address(a: &Endpoint, b: &Endpoint) -> bool {
    a.host
        .trim_end_matches('.')
        .eq_ignore_ascii_case(b.host.trim_end_matches('.'))
        && a.port == b.port
        && a.user.eq_ignore_ascii_case(&b.user)
}

/// Why `a` and `b` are one account, or None when they are (as far as can be told from
/// outside) two. Rules, strongest first:
/// 1. the same host, port and user;
/// 2. the same user at the same resolved address and port (`localhost` vs `127.0.0.1`);
/// 3. the same resolved IP on another port (143 vs 993, STARTTLS vs TLS) with an INBOX
///    that has received mail and looks identical (UIDVALIDITY, UIDNEXT, message count,
///    HIGHESTMODSEQ) and the same folder list. Servers that both answered ID with
///    different answers are never the same.
pub fn same_account(a: &AccountProbe, b: &AccountProbe) -> Option<String> {
    if same_address(&a.endpoint, &b.endpoint) {
        return Some(format!(
            "both name {} as user {}",
            a.endpoint.host_port(),
            a.endpoint.user
        ));
    }
    let same_user = a.endpoint.user.eq_ignore_ascii_case(&b.endpoint.user);
    if !a.identity.id.is_empty() && !b.identity.id.is_empty() && a.identity.id != b.identity.id {
        return None;
    }
    let (Some(pa), Some(pb)) = (a.identity.peer, b.identity.peer) else {
        return None;
    };
    if same_user && pa == pb {
        return Some(format!(
            "{} and {} both reach {pa} as user {}",
            a.endpoint.host, b.endpoint.host, a.endpoint.user
        ));
    }
    if pa.ip() != pb.ip() {
        return None;
    }
    let (Some(ia), Some(ib)) = (&a.inbox, &b.inbox) else {
        return None;
    };
    let lived_in = ia.uidnext.is_some_and(|n| n > 1);
    if lived_in
        && ia.uidvalidity == ib.uidvalidity
        && ia.uidnext == ib.uidnext
        && ia.exists == ib.exists
        && ia.highest_modseq == ib.highest_modseq
        && a.delimiter == b.delimiter
        && a.folders == b.folders
    {
        return Some(format!(
            "{} (port {}) and {} (port {}) are the same server at {} and show the same \
             INBOX (UIDVALIDITY {}, {} messages) and folders",
            a.endpoint.host,
            pa.port(),
            b.endpoint.host,
            pb.port(),
            pa.ip(),
            ia.uidvalidity,
            ia.exists
        ));
    }
    None
}

/// A key for the pair of accounts of a migration, independent of how their addresses
/// are spelled: users (case-insensitive) and the UIDVALIDITY of each INBOX. None when an
/// INBOX could not be read.
pub fn pair_key(source: &AccountProbe, dest: &AccountProbe) -> Option<String> {
    let s = source.inbox.as_ref()?;
    let d = dest.inbox.as_ref()?;
    let mut h = Sha256::new();
    for part in [
        source.endpoint.user.to_lowercase(),
        s.uidvalidity.to_string(),
        dest.endpoint.user.to_lowercase(),
        d.uidvalidity.to_string(),
    ] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    Some(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::PermanentFlags;

    fn probe(url: &str, peer: &str, inbox: (u32, u32, u32)) -> AccountProbe {
        AccountProbe {
            endpoint: url.parse().unwrap(),
            identity: ServerIdentity {
                peer: Some(peer.parse().unwrap()),
                id: Vec::new(),
            },
            inbox: Some(FolderStatus {
                uidvalidity: inbox.0,
                uidnext: Some(inbox.1),
                exists: inbox.2,
                highest_modseq: Some(7),
                permanent_flags: PermanentFlags::unrestricted(),
            }),
            folders: vec!["INBOX".into(), "Sent".into()],
            delimiter: Some('/'),
        }
    }

    #[test]
    fn spellings_of_one_account_are_recognised() {
        let a = probe("imap://alice@localhost", "127.0.0.1:143", (9, 40, 39));
        let b = probe("imap://alice@127.0.0.1:143", "127.0.0.1:143", (9, 40, 39));
        assert!(same_account(&a, &b).is_some());
        let c = probe("imap://Alice@LOCALHOST:143", "127.0.0.1:143", (9, 40, 39));
        assert!(same_account(&a, &c).is_some());
        // 143 vs 993 on one machine with the same INBOX.
        let d = probe("imaps://alice@localhost", "127.0.0.1:993", (9, 40, 39));
        assert!(same_account(&a, &d).is_some());
        assert_eq!(pair_key(&a, &d), pair_key(&b, &d));
    }

    #[test]
    fn different_accounts_are_not_confused() {
        let a = probe("imap://alice@localhost", "127.0.0.1:143", (9, 40, 39));
        // Another user on the same server: a legitimate migration (a rename).
        let b = probe("imap://bob@localhost", "127.0.0.1:143", (11, 3, 2));
        assert!(same_account(&a, &b).is_none());
        // Another server on the same machine whose INBOX differs.
        let c = probe(
            "imap://alice@localhost:1143",
            "127.0.0.1:1143",
            (10, 40, 39),
        );
        assert!(same_account(&a, &c).is_none());
        // Identical-looking but never used INBOXes are not enough.
        let e = probe("imap://alice@localhost:1143", "127.0.0.1:1143", (9, 1, 0));
        let f = probe("imap://alice@localhost:2143", "127.0.0.1:2143", (9, 1, 0));
        assert!(same_account(&e, &f).is_none());
        // Servers that say different things about themselves.
        let mut g = probe("imaps://alice@localhost", "127.0.0.1:993", (9, 40, 39));
        let mut h = a.clone();
        g.identity.id = vec![("name".into(), "A".into())];
        h.identity.id = vec![("name".into(), "B".into())];
        assert!(same_account(&g, &h).is_none());
    }
}
