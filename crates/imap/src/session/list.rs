//! LIST: the folder tree with delimiters and special-use attributes, names unquoted
//! exactly once. imap-proto hands a quoted name over with its escapes (`\\`, `\"`) in
//! place and a literal name as it is; which one it was is read from the bytes.

use crate::error::ImapError;
use crate::raw;
use imap_proto::{MailboxDatum, NameAttribute, Response};
use mailshift_core::folder::{ListedFolder, SpecialUse};

use super::ImapSession;

impl ImapSession {
    pub(super) async fn list_inner(
        &mut self,
    ) -> Result<(Vec<ListedFolder>, Option<char>), ImapError> {
        let cmd = if self.caps.special_use {
            "LIST \"\" \"*\" RETURN (SPECIAL-USE)"
        } else {
            "LIST \"\" \"*\""
        };
        let mut out = Vec::new();
        let mut delim: Option<char> = None;
        let r = raw::command_raw(&mut self.sess, cmd, "LIST", |r, bytes| {
            if let Some((folder, d)) = listed(r, bytes) {
                if delim.is_none() {
                    delim = d;
                }
                out.push(folder);
            }
            Ok(())
        })
        .await;
        r.map_err(|e| self.note_error(e))?;
        if delim.is_none() {
            raw::command(&mut self.sess, "LIST \"\" \"\"", "LIST", |r| {
                if let Response::MailboxData(MailboxDatum::List(data)) = r {
                    delim = data.delimiter.as_deref().and_then(|d| d.chars().next());
                }
                Ok(())
            })
            .await
            .map_err(|e| self.note_error(e))?;
        }
        Ok((out, delim))
    }
}

/// One folder of a LIST response (and its delimiter); `bytes` are those the response
/// was parsed from.
pub(crate) fn listed(r: &Response<'_>, bytes: &[u8]) -> Option<(ListedFolder, Option<char>)> {
    let Response::MailboxData(MailboxDatum::List(data)) = r else {
        return None;
    };
    let d = data.delimiter.as_deref().and_then(|d| d.chars().next());
    let mut special = None;
    let mut selectable = true;
    for a in &data.name_attributes {
        match a {
            NameAttribute::NoSelect => selectable = false,
            NameAttribute::All => special = Some(SpecialUse::All),
            NameAttribute::Archive => special = Some(SpecialUse::Archive),
            NameAttribute::Drafts => special = Some(SpecialUse::Drafts),
            NameAttribute::Flagged => special = Some(SpecialUse::Flagged),
            NameAttribute::Junk => special = Some(SpecialUse::Junk),
            NameAttribute::Sent => special = Some(SpecialUse::Sent),
            NameAttribute::Trash => special = Some(SpecialUse::Trash),
            NameAttribute::Extension(e) => {
                if e.eq_ignore_ascii_case("\\NonExistent") {
                    selectable = false;
                } else if let Some(s) = SpecialUse::from_attribute(e) {
                    special = Some(s);
                }
            }
            _ => {}
        }
    }
    let name: &str = &data.name;
    let raw_name = if was_quoted(name, bytes) {
        raw::unquote(name)
    } else {
        name.to_string()
    };
    Some((
        ListedFolder {
            raw: raw_name,
            delimiter: d,
            special_use: special,
            selectable,
        },
        d,
    ))
}

/// Whether `name` (borrowed from `bytes` by the parser) stood between double quotes.
/// A name the parser had to copy (it was not valid UTF-8) is judged by its escapes.
fn was_quoted(name: &str, bytes: &[u8]) -> bool {
    let start = bytes.as_ptr() as usize;
    let at = name.as_ptr() as usize;
    if at > start && at <= start + bytes.len() {
        let offset = at - start;
        return bytes.get(offset - 1) == Some(&b'"');
    }
    name.contains("\\\\") || name.contains("\\\"")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(line: &[u8]) -> ListedFolder {
        let (_, r) = Response::parse(line).unwrap();
        listed(&r, line).unwrap().0
    }

    #[test]
    fn quoted_names_are_unescaped_once() {
        let f = parse(b"* LIST (\\HasNoChildren) \"/\" \"Back\\\\slash\"\r\n");
        assert_eq!(f.raw, "Back\\slash");
        let f = parse(b"* LIST () \"/\" \"Quote \\\"x\\\"\"\r\n");
        assert_eq!(f.raw, "Quote \"x\"");
        let f = parse(b"* LIST () \"/\" \"100%\"\r\n");
        assert_eq!(f.raw, "100%");
        let f = parse(b"* LIST () \"/\" \"a*b\"\r\n");
        assert_eq!(f.raw, "a*b");
    }

    #[test]
    fn literal_names_are_taken_as_they_are() {
        let f = parse(b"* LIST () \"/\" {10}\r\nBack\\\\lash\r\n");
        assert_eq!(f.raw, "Back\\\\lash");
    }

    #[test]
    fn attributes_and_delimiters() {
        let (_, r) = Response::parse(b"* LIST (\\Noselect \\HasChildren) \".\" Work\r\n").unwrap();
        let (f, d) = listed(&r, b"* LIST (\\Noselect \\HasChildren) \".\" Work\r\n").unwrap();
        assert!(!f.selectable);
        assert_eq!(d, Some('.'));
        let f = parse(b"* LIST (\\HasNoChildren \\Sent) \"/\" \"Sent Items\"\r\n");
        assert_eq!(f.special_use, Some(SpecialUse::Sent));
        assert_eq!(f.raw, "Sent Items");
        let f = parse(b"* LIST (\\NonExistent) \"/\" Gone\r\n");
        assert!(!f.selectable);
    }
}
