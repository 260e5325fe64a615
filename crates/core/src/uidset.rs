//! IMAP UID sets: compressing sorted UIDs into `1:5,7,9:12` and back.

/// Renders ascending, de-duplicated UIDs as a compact IMAP sequence set.
pub fn compress(uids: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < uids.len() {
        let start = uids[i];
        let mut end = start;
        while i + 1 < uids.len() && uids[i + 1] == end.wrapping_add(1) {
            i += 1;
            end = uids[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

/// Expands `(start, end)` ranges (either order, as servers may send `7:5`) into UIDs.
pub fn expand(ranges: &[(u32, u32)]) -> Vec<u32> {
    let mut out = Vec::new();
    for &(a, b) in ranges {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        out.extend(lo..=hi);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compresses_runs() {
        assert_eq!(compress(&[]), "");
        assert_eq!(compress(&[4]), "4");
        assert_eq!(compress(&[1, 2, 3, 5, 7, 8]), "1:3,5,7:8");
    }

    #[test]
    fn expands_both_orders() {
        assert_eq!(expand(&[(3, 1), (7, 7)]), vec![1, 2, 3, 7]);
    }
}
