//! Which forms occur in a few texts, for [`Patterns::occurring_in`]
//! (`crate::Patterns::occurring_in`): an index of every position of the
//! texts by the (up to) eight bytes that follow it.
//!
//! Sorted, the positions' byte strings are in lexicographic order, so the
//! positions where a form's first eight bytes occur are one range found by
//! binary search; a longer form is then compared at each of them. A base64
//! form may run through PEM/MIME line breaks, so a text with `\r` or `\n`
//! is indexed a second time without them: a form found there but not in
//! the redaction is kept all the same, which only costs a pattern.

use zeroize::Zeroizing;

/// Bytes of a position's key.
const KEY: usize = 8;

pub(crate) struct TextIndex<'t> {
    texts: Vec<&'t [u8]>,
    /// The texts that hold a line break, without `\r` and `\n`; text
    /// `texts.len() + i` in the entries.
    unbroken: Vec<Zeroizing<Vec<u8>>>,
    /// Per position: key (big-endian, zero-padded) << 64 | key length << 60
    /// | text << 32 | offset. The keys are text bytes, so they are wiped.
    entries: Zeroizing<Vec<u128>>,
    /// Too many or too large texts to index: every form counts as present.
    everything: bool,
}

impl<'t> TextIndex<'t> {
    pub(crate) fn new(texts: &[&'t [u8]]) -> TextIndex<'t> {
        let unbroken: Vec<Zeroizing<Vec<u8>>> = texts
            .iter()
            .filter(|t| t.iter().any(|&b| b == b'\n' || b == b'\r'))
            .map(|t| {
                Zeroizing::new(
                    t.iter()
                        .copied()
                        .filter(|&b| b != b'\n' && b != b'\r')
                        .collect(),
                )
            })
            .collect();
        let mut index = TextIndex {
            texts: texts.to_vec(),
            unbroken,
            entries: Zeroizing::new(Vec::new()),
            everything: false,
        };
        let count = index.texts.len() + index.unbroken.len();
        let bytes: usize = (0..count).map(|i| index.text(i).len()).sum();
        if count >= 1 << 28 || (0..count).any(|i| u32::try_from(index.text(i).len()).is_err()) {
            index.everything = true;
            return index;
        }
        let mut entries = Zeroizing::new(Vec::with_capacity(bytes));
        for t in 0..count {
            let text = index.text(t);
            for at in 0..text.len() {
                let (key, len) = pack(&text[at..text.len().min(at + KEY)]);
                entries.push(
                    u128::from(key) << 64 | (len as u128) << 60 | (t as u128) << 32 | at as u128,
                );
            }
        }
        entries.sort_unstable();
        index.entries = entries;
        index
    }

    fn text(&self, i: usize) -> &[u8] {
        match self.texts.get(i) {
            Some(t) => t,
            None => &self.unbroken[i - self.texts.len()],
        }
    }

    /// True if `form` occurs in a text (or, with its line breaks removed,
    /// in a text that has some).
    pub(crate) fn contains(&self, form: &[u8]) -> bool {
        if self.everything {
            return true;
        }
        let (key, len) = pack(&form[..form.len().min(KEY)]);
        if len == 0 {
            return true;
        }
        let probe = u128::from(key) << 64 | (len as u128) << 60;
        let top = if len == KEY {
            u64::MAX
        } else {
            !(u64::MAX >> (8 * len))
        };
        let from = self.entries.partition_point(|&e| e < probe);
        for &e in &self.entries[from..] {
            let (e_key, e_len) = ((e >> 64) as u64, ((e >> 60) & 0xF) as usize);
            if e_key & top != key || e_len < len {
                return false;
            }
            if form.len() <= KEY {
                return true;
            }
            let text = self.text(((e >> 32) & 0x0FFF_FFFF) as usize);
            if text[(e & 0xFFFF_FFFF) as usize..].starts_with(form) {
                return true;
            }
        }
        false
    }
}

/// Up to eight bytes, big-endian and zero-padded, and how many.
fn pack(bytes: &[u8]) -> (u64, usize) {
    let mut key = 0u64;
    for (i, &b) in bytes.iter().enumerate() {
        key |= u64::from(b) << (56 - 8 * i);
    }
    (key, bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(texts: &[&[u8]], form: &[u8]) -> bool {
        texts
            .iter()
            .any(|t| t.windows(form.len()).any(|w| w == form))
    }

    #[test]
    fn finds_exactly_the_substrings() {
        let texts: [&[u8]; 3] = [b"curl -H token:abc\x00def", b"", b"aab\xffaab\xff\x00x"];
        let index = TextIndex::new(&texts);
        let mut forms: Vec<Vec<u8>> = Vec::new();
        for t in texts {
            for a in 0..t.len() {
                for b in a + 1..=t.len() {
                    forms.push(t[a..b].to_vec());
                }
            }
        }
        forms.extend(
            [
                &b"abd"[..],
                b"\x00",
                b"token:abc\x00deg",
                b"aab\xff\x00",
                b"xx",
                b"curl -H token:abc\x00defg",
            ]
            .map(<[u8]>::to_vec),
        );
        for form in &forms {
            assert_eq!(
                index.contains(form),
                naive(&texts, form),
                "{:?}",
                String::from_utf8_lossy(form)
            );
        }
    }

    #[test]
    fn forms_across_line_breaks_are_found() {
        let texts: [&[u8]; 1] = [b"-----\nQUJDREVG\r\nR0hJ\n-----"];
        let index = TextIndex::new(&texts);
        assert!(index.contains(b"QUJDREVGR0hJ"));
        assert!(!index.contains(b"QUJDREVGR0hK"));
    }
}
