//! Structural guards: does a cached prompt ask the same thing as this one?
//!
//! Sentence embeddings are close to bags of words: "flights from New York to
//! London" and "from London to New York", "enable dark mode" and "disable
//! dark mode" score above any useful threshold. [`conflict`] compares the two
//! prompts' structure instead and names the first difference that changes
//! the answer:
//!
//! - numbers (digits and number words) and negations (*not*, *never*, verbs
//!   like *avoid*, a prefix like *il-*/*un-*/*dis-* or *-less*/*-ful* on a
//!   word the other prompt has bare);
//! - contrasts from a compact built-in lexicon: antonyms and comparatives
//!   (*fastest*/*slowest*, *enable*/*disable*, *more*/*fewer*), time words
//!   (*today*/*tomorrow*, *last year*/*this year*, months, days, seasons),
//!   scope words (*all*/*some*/*most*), sequence words (*first*/*second*),
//!   units (and which unit a number is given in, so the direction of a
//!   conversion), roles and personas, human and programming languages, data
//!   types, kinds of text and tasks (*explain*/*draw*/*debug*...). Two
//!   prompts conflict when both use words of one contrast and not the same
//!   ones; a word only one prompt uses does not. *Less*/*least* before an
//!   adjective takes its other side (*less healthy* is *unhealthier*);
//! - entities: a capitalised word (not at the start of a sentence) or a
//!   mixed-case one (*iPhone*, *DNA*) the other prompt does not mention;
//! - quoted or backquoted text, and operators (`+`, `==`, `<`...);
//! - order: content words that trade their roles (after *from*, *to*,
//!   *than*, *by*...: "Subtract 7 from 20" / "Subtract 20 from 7"), or the same
//!   content words with two of them swapped around a third ("Why did Brutus
//!   betray Caesar?" / "Why did Caesar betray Brutus?") or one of them
//!   repeated in another place.
//!
//! The guards refuse some true paraphrases (facts of a multi-sentence prompt
//! given in another order read as a swap; "can't" and "unable" are different
//! negations); they only ever turn a hit into a miss.
//!
//! Every check runs over one tokenisation of each prompt and allocates a few
//! vectors: it is linear in the prompt's length except the order checks,
//! which look at the words both prompts use once (quadratic in their count,
//! capped at [`MAX_ORDERED`]).

use crate::logic::{negations, numbers};

/// Why two prompts must not share an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    Numbers,
    Negation,
    /// A contrast of the lexicon, by name (`antonym`, `time`, `unit`...).
    Contrast(&'static str),
    Entity,
    Quote,
    Operator,
    WordOrder,
}

/// The first structural difference between prompts `a` and `b` that may
/// change the answer, or None when they may share it.
pub fn conflict(a: &str, b: &str) -> Option<Guard> {
    let pa = Prompt::parse(a);
    let pb = Prompt::parse(b);
    if pa.numbers(a) != pb.numbers(b) {
        return Some(Guard::Numbers);
    }
    if negations(a) != negations(b)
        || pa.negative_verbs != pb.negative_verbs
        || prefix_negation(&pa, &pb)
    {
        return Some(Guard::Negation);
    }
    if let Some(class) = contrast(&pa.features, &pb.features) {
        let name = CLASS_NAMES.get(usize::from(class)).unwrap_or(&"antonym");
        return Some(Guard::Contrast(name));
    }
    if !pa.entities_in(&pb) || !pb.entities_in(&pa) {
        return Some(Guard::Entity);
    }
    if !pa.quotes.is_empty() && !pb.quotes.is_empty() && !pa.same_quotes(&pb) {
        return Some(Guard::Quote);
    }
    if pa.ops != pb.ops {
        return Some(Guard::Operator);
    }
    if word_order(&pa, &pb) {
        return Some(Guard::WordOrder);
    }
    None
}

/// Shared words beyond this many are not checked for order.
pub const MAX_ORDERED: usize = 96;

const CAP: u8 = 1; // capitalised mid-sentence, or mixed case: an entity
const NUM: u8 = 2; // digits
const BREAK: u8 = 4; // punctuation before it: a new phrase

#[derive(Debug, Clone, Copy)]
struct Tok {
    start: u32,
    end: u32,
    stem_end: u32,
    flags: u8,
}

/// One prompt, tokenised: lowercase words in one buffer.
struct Prompt {
    buf: String,
    toks: Vec<Tok>,
    /// Operator characters, sorted.
    ops: Vec<u8>,
    /// Quoted spans as token ranges.
    quotes: Vec<(usize, usize)>,
    /// (contrast class, side), sorted and deduplicated.
    features: Vec<(u16, u16)>,
    negative_verbs: u32,
}

impl Prompt {
    fn parse(text: &str) -> Self {
        let chars: Vec<char> = text.chars().collect();
        let mut p = Prompt {
            buf: String::with_capacity(text.len() + 16),
            toks: Vec::with_capacity(text.len() / 4 + 1),
            ops: Vec::new(),
            quotes: Vec::new(),
            features: Vec::new(),
            negative_verbs: 0,
        };
        let mut sentence_start = true;
        let mut brk = true;
        // Open quote: its closing character and first token.
        let mut open: Option<(char, usize)> = None;
        let at = |i: usize| chars.get(i).copied().unwrap_or(' ');
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c.is_alphanumeric() {
                i = p.word(&chars, i, sentence_start, brk);
                sentence_start = false;
                brk = false;
                continue;
            }
            let prev = if i == 0 { ' ' } else { chars[i - 1] };
            let next = at(i + 1);
            match c {
                '.' | '?' | '!' | ':' | ';' | '\n' => {
                    if c == '!' && next == '=' {
                        p.ops.push(b'!');
                    } else if c != '.' || !next.is_alphanumeric() {
                        sentence_start = true;
                    }
                    brk = true;
                }
                '"' | '`' | '\u{201c}' | '\u{201d}' | '\'' | '\u{2018}' | '\u{2019}' => {
                    let closes = match open {
                        Some((close, _)) => {
                            close == c
                                || (close == '\'' && c == '\u{2019}')
                                || (close == '"' && c == '\u{201d}')
                        }
                        None => false,
                    };
                    if closes && !next.is_alphanumeric() {
                        if let Some((_, first)) = open.take() {
                            p.quotes.push((first, p.toks.len()));
                        }
                    } else if open.is_none()
                        && !prev.is_alphanumeric()
                        && !next.is_whitespace()
                        && i + 1 < chars.len()
                    {
                        let close = match c {
                            '\u{201c}' => '\u{201d}',
                            '\u{2018}' => '\u{2019}',
                            c => c,
                        };
                        open = Some((close, p.toks.len()));
                    }
                    brk = true;
                }
                '$' | '\u{20ac}' | '\u{a3}' | '\u{a5}' | '%' => {
                    let word = match c {
                        '$' => "dollar",
                        '\u{20ac}' => "euro",
                        '\u{a3}' => "sterling",
                        '\u{a5}' => "yen",
                        _ => "percent",
                    };
                    p.push_symbol(word);
                }
                '\u{b0}' => {
                    let unit = match (next.to_ascii_lowercase(), at(i + 2).is_alphanumeric()) {
                        ('c', false) => "celsius",
                        ('f', false) => "fahrenheit",
                        _ => "degree",
                    };
                    p.push_symbol(unit);
                    if unit != "degree" {
                        i += 1;
                    }
                }
                '+' | '*' | '=' | '<' | '>' | '^' | '&' | '|' => p.ops.push(c as u8),
                '-' | '/' => {
                    let joins_words = prev.is_alphanumeric()
                        && next.is_alphanumeric()
                        && (prev.is_alphabetic() || next.is_alphabetic());
                    let minus_sign = c == '-' && next.is_ascii_digit() && !prev.is_alphanumeric();
                    if !joins_words && !minus_sign {
                        p.ops.push(c as u8);
                    }
                }
                c if c.is_whitespace() => {}
                _ => brk = true,
            }
            i += 1;
        }
        p.ops.sort_unstable();
        p.annotate();
        p
    }

    /// Reads the word at `chars[i]`; returns the index after it.
    fn word(&mut self, chars: &[char], mut i: usize, sentence_start: bool, brk: bool) -> usize {
        let start = self.buf.len();
        let digits = chars[i].is_ascii_digit();
        let mut upper = 0usize;
        let mut first_upper = false;
        let first = i;
        while i < chars.len() {
            let c = chars[i];
            let next = chars.get(i + 1).copied().unwrap_or(' ');
            let ok = if digits {
                c.is_ascii_digit() || ((c == '.' || c == ',') && next.is_ascii_digit())
            } else {
                c.is_alphanumeric()
                    || ((c == '\'' || c == '\u{2019}') && next.is_alphabetic() && i > first)
                    || (c == '/' && next.is_alphabetic() && i - first <= 3)
            };
            if !ok {
                break;
            }
            if c.is_uppercase() {
                upper += 1;
                first_upper |= i == first;
            }
            match c {
                '\u{2019}' => self.buf.push('\''),
                ',' => {}
                c => self.buf.extend(c.to_lowercase()),
            }
            i += 1;
        }
        // C++, C#, F#
        if !digits {
            if chars.get(i) == Some(&'+') && chars.get(i + 1) == Some(&'+') {
                self.buf.push_str("++");
                i += 2;
            } else if chars.get(i) == Some(&'#') {
                self.buf.push('#');
                i += 1;
            }
        }
        if self.buf.ends_with("'s") {
            self.buf.truncate(self.buf.len() - 2);
        }
        let word = &self.buf[start..];
        // "HTTPS" is not the plural of "HTTP".
        let stem_len = if upper > 1 {
            word.len()
        } else {
            stem(word).len()
        };
        let mut flags = 0;
        if digits {
            flags |= NUM;
        } else if (upper > 1 || (first_upper && !sentence_start)) && !is_stop(word) {
            flags |= CAP;
        }
        if brk {
            flags |= BREAK;
        }
        self.toks.push(Tok {
            start: start as u32,
            end: self.buf.len() as u32,
            stem_end: (start + stem_len) as u32,
            flags,
        });
        i
    }

    fn push_symbol(&mut self, word: &str) {
        let start = self.buf.len() as u32;
        self.buf.push_str(word);
        let end = self.buf.len() as u32;
        self.toks.push(Tok {
            start,
            end,
            stem_end: end,
            flags: 0,
        });
    }

    fn text(&self, t: usize) -> &str {
        let t = self.toks[t];
        &self.buf[t.start as usize..t.end as usize]
    }

    fn stem(&self, t: usize) -> &str {
        let t = self.toks[t];
        &self.buf[t.start as usize..t.stem_end as usize]
    }

    fn is_num(&self, t: usize) -> bool {
        self.toks[t].flags & NUM != 0
    }

    /// Contrast features, word operators, negative verbs.
    fn annotate(&mut self) {
        let mut features = Vec::new();
        let mut word_ops = Vec::new();
        let n = self.toks.len();
        let mut t = 0;
        while t < n {
            let w = self.text(t);
            let next = if t + 1 < n { self.text(t + 1) } else { "" };
            // "last year", "next week": one time expression.
            if let (Some(rel), Some(period)) = (relative(w), period(next)) {
                features.push((TIME, 100 + rel * 40 + period));
                t += 2;
                continue;
            }
            // "less healthy" is "unhealthier", "more expensive" is
            // "pricier": the degree word goes with the adjective's side.
            let next_antonyms = lexicon(next).iter().filter(|e| e.1 >= ANTONYM);
            if matches!(w, "less" | "least" | "more" | "most") && next_antonyms.clone().count() > 0
            {
                let flip = matches!(w, "less" | "least");
                for &(_, class, side) in lexicon(next) {
                    let side = if flip && class >= ANTONYM {
                        1 - side
                    } else {
                        side
                    };
                    features.push((class, side));
                }
                t += 2;
                continue;
            }
            if let Some(verb) = phrasal_verb(w)
                && let Some(particle) = particle(next)
            {
                features.push((PHRASAL, verb * 8 + particle));
            }
            let after_number = t > 0 && self.is_num(t - 1);
            let before = if t > 0 { self.text(t - 1) } else { "" };
            for &(_, class, side) in lexicon(w) {
                // "m", "g", "l": units only after a number.
                if class == UNIT && w.len() == 1 && !after_number {
                    continue;
                }
                // "how many" asks for a count; "a few" means some.
                let side = match (class, w, before) {
                    (SCOPE, "many" | "much", "how") => continue,
                    (SCOPE, "few", "a") => 1,
                    _ => side,
                };
                features.push((class, side));
                if class == UNIT && after_number {
                    features.push((QUANTITY, side));
                }
            }
            // "9 am" (not "I am").
            if w == "am" && after_number {
                features.push((DAYPART, 0));
            }
            // "30 degrees Celsius": the quantity is in Celsius.
            if w.starts_with("degree") && after_number {
                for &(_, class, side) in lexicon(next) {
                    if class == UNIT {
                        features.push((QUANTITY, side));
                    }
                }
            }
            // "$100": a symbol before the number.
            if t + 1 < n
                && self.is_num(t + 1)
                && matches!(w, "dollar" | "euro" | "sterling" | "yen")
            {
                for &(_, class, side) in lexicon(w) {
                    if class == UNIT {
                        features.push((QUANTITY, side));
                    }
                }
            }
            let between_numbers = t > 0 && t + 1 < n && self.is_num(t - 1) && self.is_num(t + 1);
            match w {
                "plus" => word_ops.push(b'+'),
                "minus" => word_ops.push(b'-'),
                "multiplied" => word_ops.push(b'*'),
                "divided" => word_ops.push(b'/'),
                "times" | "x" if between_numbers => word_ops.push(b'*'),
                _ => {}
            }
            if is_negative_verb(w) {
                self.negative_verbs += 1;
            }
            t += 1;
        }
        features.sort_unstable();
        features.dedup();
        self.features = features;
        self.ops.extend(word_ops);
        self.ops.sort_unstable();
    }

    /// Digits and number words, normalised.
    fn numbers(&self, text: &str) -> Vec<String> {
        let mut found: Vec<String> = numbers(text).into_iter().collect();
        for t in 0..self.toks.len() {
            let w = self.text(t);
            let value = match w {
                "one" => {
                    let before = if t > 0 { self.text(t - 1) } else { "" };
                    let after = self.toks.get(t + 1).map_or("", |_| self.text(t + 1));
                    let pronoun = matches!(
                        before,
                        "which"
                            | "this"
                            | "that"
                            | "the"
                            | "each"
                            | "any"
                            | "every"
                            | "no"
                            | "another"
                            | "someone"
                            | "anyone"
                            | "no-one"
                    ) || after == "of"
                        || after == "another";
                    if pronoun { None } else { Some("1") }
                }
                _ => number_word(w),
            };
            if let Some(v) = value {
                found.push(v.to_owned());
            }
        }
        found.sort_unstable();
        found.dedup();
        found
    }

    /// Whether every entity of `self` is a word of `other`.
    fn entities_in(&self, other: &Prompt) -> bool {
        let words = other.stems();
        (0..self.toks.len())
            .filter(|&t| self.toks[t].flags & CAP != 0)
            .all(|t| words.binary_search(&self.stem(t)).is_ok())
    }

    /// Whether both prompts quote the same texts (in any order).
    fn same_quotes(&self, other: &Prompt) -> bool {
        self.quoted() == other.quoted()
    }

    /// The quoted texts as stems, sorted.
    fn quoted(&self) -> Vec<Vec<&str>> {
        let mut q: Vec<Vec<&str>> = self
            .quotes
            .iter()
            .map(|&(a, b)| (a..b).map(|t| self.stem(t)).collect())
            .collect();
        q.sort_unstable();
        q.dedup();
        q
    }

    /// Every stem, sorted, without repeats.
    fn stems(&self) -> Vec<&str> {
        let mut w: Vec<&str> = (0..self.toks.len()).map(|t| self.stem(t)).collect();
        w.sort_unstable();
        w.dedup();
        w
    }
}

/// The words of `x` that `y` (sorted) does not have.
fn only<'a>(x: &[&'a str], y: &[&str]) -> Vec<&'a str> {
    x.iter()
        .filter(|w| y.binary_search(w).is_err())
        .copied()
        .collect()
}

/// A light stem: plurals and a final -y/-ie folded ("countries" and
/// "country" both give "countr").
fn stem(w: &str) -> &str {
    let mut s = w;
    if s.len() > 3
        && s.ends_with('s')
        && !s.ends_with("ss")
        && !s.ends_with("us")
        && !s.ends_with("is")
    {
        s = &s[..s.len() - 1];
    }
    if s.len() > 4 && s.ends_with("ie") {
        s = &s[..s.len() - 2];
    } else if s.len() > 3 && s.ends_with('y') {
        s = &s[..s.len() - 1];
    }
    s
}

/// For each class both prompts use, the sides they use must agree.
fn contrast(a: &[(u16, u16)], b: &[(u16, u16)]) -> Option<u16> {
    let sides = |f: &[(u16, u16)], class: u16| {
        let start = f.partition_point(|&(c, _)| c < class);
        let end = f.partition_point(|&(c, _)| c <= class);
        (start, end)
    };
    let mut i = 0;
    while i < a.len() {
        let class = a[i].0;
        let (sa, ea) = sides(a, class);
        let (sb, eb) = sides(b, class);
        if sb < eb && a[sa..ea] != b[sb..eb] {
            return Some(class);
        }
        i = ea;
    }
    None
}

/// A word only one prompt has, with a negating prefix or suffix on a word
/// only the other has: "legal" / "illegal", "like" / "dislike",
/// "harmful" / "harmless".
fn prefix_negation(a: &Prompt, b: &Prompt) -> bool {
    let (wa, wb) = (a.stems(), b.stems());
    let (only_a, only_b) = (only(&wa, &wb), only(&wb, &wa));
    let negates = |long: &str, short: &[&str]| {
        for (prefix, min) in [
            ("un", 4),
            ("in", 5),
            ("im", 4),
            ("il", 4),
            ("ir", 4),
            ("dis", 4),
            ("non", 4),
            ("de", 6),
        ] {
            if let Some(rest) = long.strip_prefix(prefix)
                && rest.len() >= min
                && short.binary_search(&rest).is_ok()
            {
                return true;
            }
        }
        if let Some(root) = long.strip_suffix("less")
            && root.len() >= 3
        {
            let mut full = String::with_capacity(root.len() + 3);
            full.push_str(root);
            full.push_str("ful");
            return short.binary_search(&full.as_str()).is_ok();
        }
        false
    };
    only_a.iter().any(|w| negates(w, &only_b)) || only_b.iter().any(|w| negates(w, &only_a))
}

/// Role of a word: the last marker before it in its phrase.
fn marker(w: &str) -> Option<u8> {
    Some(match w {
        "from" => 1,
        "to" | "into" | "onto" | "toward" | "towards" => 2,
        "than" => 3,
        "by" => 4,
        "of" => 5,
        "for" => 6,
        "in" => 7,
        "on" => 8,
        "at" => 9,
        "with" => 10,
        "per" => 11,
        "over" => 12,
        "under" => 13,
        "as" => 14,
        "about" => 15,
        "after" => 16,
        "before" => 17,
        _ => return None,
    })
}

/// Words after which a word's role starts afresh: verbs of being and
/// doing, question words, conjunctions.
fn resets_role(w: &str) -> bool {
    matches!(
        w,
        "is" | "are"
            | "was"
            | "were"
            | "be"
            | "been"
            | "am"
            | "do"
            | "does"
            | "did"
            | "have"
            | "has"
            | "had"
            | "can"
            | "could"
            | "would"
            | "should"
            | "will"
            | "shall"
            | "may"
            | "might"
            | "must"
            | "what"
            | "which"
            | "who"
            | "whom"
            | "why"
            | "how"
            | "when"
            | "where"
            | "that"
            | "if"
            | "because"
            | "while"
            | "and"
            | "or"
            | "but"
            | "so"
            | "then"
            | "vs"
            | "versus"
            | "between"
            | "nor"
            | "whether"
    )
}

/// Two prompts with the same content words in another order, where the
/// order changes who does what.
fn word_order<'p>(a: &'p Prompt, b: &'p Prompt) -> bool {
    struct Content<'p> {
        stem: &'p str,
        role: u8,
        pos: usize,
    }
    let content = |p: &'p Prompt| -> Vec<Content<'p>> {
        let mut out = Vec::new();
        let mut role = 0;
        for t in 0..p.toks.len() {
            let w = p.text(t);
            if p.toks[t].flags & BREAK != 0 {
                role = 0;
            }
            if let Some(m) = marker(w) {
                role = m;
            } else if resets_role(w) {
                role = 0;
            } else if p.is_num(t) || !is_stop(w) {
                out.push(Content {
                    stem: p.stem(t),
                    role,
                    pos: out.len(),
                });
            }
        }
        out
    };
    let (ca, cb) = (content(a), content(b));
    // Stems with their index, sorted: to count and find words.
    let index = |c: &[Content<'p>]| -> Vec<(&'p str, usize)> {
        let mut v: Vec<(&str, usize)> = c.iter().map(|x| (x.stem, x.pos)).collect();
        v.sort_unstable();
        v
    };
    let (ia, ib) = (index(&ca), index(&cb));
    // The index of `stem` in `c` when it occurs exactly once.
    let once = |i: &[(&str, usize)], stem: &str| {
        let start = i.partition_point(|x| x.0 < stem);
        let end = start + i[start..].partition_point(|x| x.0 == stem);
        (end == start + 1).then(|| i[start].1)
    };
    // The same words, one of them more often: a repeated word took
    // another's place ("noon in Tokyo" / "noon in London" after "Tokyo and
    // London").
    let distinct = |i: &[(&'p str, usize)]| {
        let mut d: Vec<&str> = i.iter().map(|x| x.0).collect();
        d.dedup();
        d
    };
    let same_counts = ia.len() == ib.len() && ia.iter().zip(&ib).all(|(x, y)| x.0 == y.0);
    if !same_counts && distinct(&ia) == distinct(&ib) {
        return true;
    }
    // Words used exactly once in each prompt, in a's order.
    let shared: Vec<(&Content, &Content)> = ca
        .iter()
        .filter(|x| once(&ia, x.stem).is_some())
        .filter_map(|x| once(&ib, x.stem).map(|y| (x, &cb[y])))
        .take(MAX_ORDERED)
        .collect();
    // Two words that trade their roles: "from X to Y" / "from Y to X".
    for (i, (xa, xb)) in shared.iter().enumerate() {
        if xa.role == xb.role {
            continue;
        }
        for (ya, yb) in &shared[i + 1..] {
            if xa.role == yb.role && ya.role == xb.role {
                return true;
            }
        }
    }
    // The same words, two swapped around a third: a decreasing run of
    // three in b's positions taken in a's order. Moving a phrase to the
    // front or back never makes one.
    if !same_counts || shared.len() < 3 {
        return false;
    }
    let pos: Vec<usize> = shared.iter().map(|(_, y)| y.pos).collect();
    let mut suffix_min = vec![usize::MAX; pos.len() + 1];
    for j in (0..pos.len()).rev() {
        suffix_min[j] = suffix_min[j + 1].min(pos[j]);
    }
    let mut prefix_max = None;
    for j in 0..pos.len() {
        if prefix_max.is_some_and(|m| m > pos[j]) && suffix_min[j + 1] < pos[j] {
            return true;
        }
        prefix_max = Some(prefix_max.map_or(pos[j], |m: usize| m.max(pos[j])));
    }
    false
}

/// Function words: no content of their own.
fn is_stop(w: &str) -> bool {
    w.contains("n't")
        || matches!(
            w,
            "a" | "an"
                | "the"
                | "this"
                | "that"
                | "these"
                | "those"
                | "is"
                | "are"
                | "was"
                | "were"
                | "be"
                | "been"
                | "being"
                | "am"
                | "do"
                | "does"
                | "did"
                | "done"
                | "doing"
                | "have"
                | "has"
                | "had"
                | "having"
                | "i"
                | "me"
                | "my"
                | "mine"
                | "myself"
                | "you"
                | "your"
                | "yours"
                | "yourself"
                | "we"
                | "us"
                | "our"
                | "they"
                | "them"
                | "their"
                | "he"
                | "him"
                | "his"
                | "she"
                | "her"
                | "it"
                | "its"
                | "what"
                | "which"
                | "who"
                | "whom"
                | "whose"
                | "why"
                | "how"
                | "when"
                | "where"
                | "there"
                | "here"
                | "can"
                | "could"
                | "would"
                | "should"
                | "will"
                | "shall"
                | "may"
                | "might"
                | "must"
                | "please"
                | "tell"
                | "give"
                | "show"
                | "let"
                | "of"
                | "in"
                | "on"
                | "at"
                | "to"
                | "from"
                | "for"
                | "by"
                | "with"
                | "about"
                | "into"
                | "onto"
                | "as"
                | "than"
                | "then"
                | "so"
                | "if"
                | "or"
                | "and"
                | "but"
                | "not"
                | "no"
                | "nor"
                | "some"
                | "any"
                | "all"
                | "every"
                | "each"
                | "more"
                | "most"
                | "less"
                | "least"
                | "very"
                | "really"
                | "just"
                | "also"
                | "too"
                | "much"
                | "many"
                | "few"
                | "up"
                | "out"
                | "over"
                | "under"
                | "again"
                | "get"
                | "way"
                | "like"
                | "i'm"
                | "i've"
                | "i'll"
                | "i'd"
                | "you're"
                | "we're"
                | "they're"
                | "vs"
                | "versus"
                | "between"
                | "per"
                | "toward"
                | "towards"
                | "after"
                | "before"
                | "whether"
                | "because"
                | "while"
                | "s"
                | "t"
                | "exactly"
                | "actually"
                | "best"
        )
}

fn is_negative_verb(w: &str) -> bool {
    matches!(
        w,
        "avoid"
            | "avoids"
            | "avoiding"
            | "avoided"
            | "prevent"
            | "prevents"
            | "preventing"
            | "lack"
            | "lacks"
            | "lacking"
            | "fail"
            | "fails"
            | "failed"
            | "failing"
            | "refuse"
            | "refuses"
            | "refused"
            | "forbid"
            | "forbids"
            | "forbidden"
            | "prohibit"
            | "prohibits"
            | "prohibited"
            | "ban"
            | "bans"
            | "banned"
            | "omit"
            | "omits"
            | "ignore"
            | "ignores"
            | "ignoring"
    )
}

fn number_word(w: &str) -> Option<&'static str> {
    Some(match w {
        "zero" => "0",
        "two" => "2",
        "three" => "3",
        "four" => "4",
        "five" => "5",
        "six" => "6",
        "seven" => "7",
        "eight" => "8",
        "nine" => "9",
        "ten" => "10",
        "eleven" => "11",
        "twelve" | "dozen" => "12",
        "thirteen" => "13",
        "fourteen" => "14",
        "fifteen" => "15",
        "sixteen" => "16",
        "seventeen" => "17",
        "eighteen" => "18",
        "nineteen" => "19",
        "twenty" => "20",
        "thirty" => "30",
        "forty" => "40",
        "fifty" => "50",
        "sixty" => "60",
        "seventy" => "70",
        "eighty" => "80",
        "ninety" => "90",
        "hundred" => "100",
        "thousand" => "1000",
        "million" => "1000000",
        "billion" => "1000000000",
        _ => return None,
    })
}

fn relative(w: &str) -> Option<u16> {
    Some(match w {
        "last" | "previous" | "past" => 0,
        "this" | "current" => 1,
        "next" | "coming" | "upcoming" => 2,
        _ => return None,
    })
}

fn period(w: &str) -> Option<u16> {
    Some(match w {
        "year" => 0,
        "month" => 1,
        "week" => 2,
        "weekend" => 3,
        "night" => 4,
        "quarter" => 5,
        "decade" => 6,
        "century" => 7,
        "semester" | "term" => 8,
        "season" => 9,
        "morning" => 10,
        "afternoon" => 11,
        "evening" => 12,
        "summer" => 13,
        "winter" => 14,
        "spring" => 15,
        "autumn" | "fall" => 16,
        "monday" => 17,
        "tuesday" => 18,
        "wednesday" => 19,
        "thursday" => 20,
        "friday" => 21,
        "saturday" => 22,
        "sunday" => 23,
        "time" => 24,
        _ => return None,
    })
}

fn phrasal_verb(w: &str) -> Option<u16> {
    Some(match w {
        "turn" | "turned" | "turning" | "switch" | "switched" => 1,
        "zoom" | "zoomed" | "zooming" => 2,
        "log" | "logged" | "logging" | "sign" | "signed" | "signing" => 3,
        "opt" | "opted" => 4,
        "scale" | "scaled" | "scaling" => 5,
        "check" | "checked" | "checking" => 6,
        "plug" | "plugged" => 7,
        "round" | "rounded" | "rounding" => 8,
        _ => return None,
    })
}

fn particle(w: &str) -> Option<u16> {
    Some(match w {
        "in" => 1,
        "out" => 2,
        "on" => 3,
        "off" => 4,
        "up" => 5,
        "down" => 6,
        _ => return None,
    })
}

// Contrast classes: words of one class are alternatives, and two prompts
// that both use a class must use the same sides of it.
const TIME: u16 = 1;
const MONTH: u16 = 2;
const WEEKDAY: u16 = 3;
const SEASON: u16 = 4;
const DAYPART: u16 = 5;
const MEAL: u16 = 6;
const SCOPE: u16 = 7;
const FREQUENCY: u16 = 8;
const SEQUENCE: u16 = 9;
const UNIT: u16 = 10;
const QUANTITY: u16 = 11;
const PHRASAL: u16 = 12;
const ROLE: u16 = 13;
const LANGUAGE: u16 = 14;
const CODE_LANGUAGE: u16 = 15;
const DATA_TYPE: u16 = 16;
const TEXT_KIND: u16 = 17;
const TASK: u16 = 18;
/// Antonym pair `i` is class `ANTONYM + i`, its sides 0 and 1.
const ANTONYM: u16 = 32;

/// Names of the classes below [`ANTONYM`]; every class from it on is an
/// antonym pair.
const CLASS_NAMES: &[&str] = &[
    "",
    "time",
    "month",
    "weekday",
    "season",
    "part of day",
    "meal",
    "scope",
    "frequency",
    "sequence",
    "unit",
    "quantity unit",
    "phrasal verb",
    "role",
    "language",
    "programming language",
    "data type",
    "kind of text",
    "task",
];

/// Antonym pairs: each side lists its forms (and near synonyms).
const ANTONYMS: &[(&[&str], &[&str])] = &[
    (
        &["fast", "faster", "fastest", "quick", "quicker", "quickest"],
        &["slow", "slower", "slowest"],
    ),
    (
        &[
            "enable",
            "enables",
            "enabled",
            "enabling",
            "activate",
            "activated",
        ],
        &[
            "disable",
            "disables",
            "disabled",
            "disabling",
            "deactivate",
            "deactivated",
        ],
    ),
    (
        &[
            "advantage",
            "advantages",
            "pros",
            "benefit",
            "benefits",
            "strength",
            "strengths",
        ],
        &[
            "disadvantage",
            "disadvantages",
            "cons",
            "drawback",
            "drawbacks",
            "downside",
            "downsides",
            "weakness",
            "weaknesses",
            "risks",
        ],
    ),
    (
        &[
            "increase",
            "increases",
            "increasing",
            "raise",
            "raises",
            "boost",
            "higher",
            "high",
            "highest",
            "maximize",
        ],
        &[
            "decrease",
            "decreases",
            "decreasing",
            "reduce",
            "reduces",
            "lower",
            "low",
            "lowest",
            "minimize",
        ],
    ),
    (
        &[
            "hot", "hotter", "hottest", "warm", "warmer", "warmest", "heat",
        ],
        &["cold", "colder", "coldest", "cool", "cooler", "coolest"],
    ),
    (&["good", "better", "best"], &["bad", "worse", "worst"]),
    (
        &[
            "encrypt",
            "encrypts",
            "encrypted",
            "encryption",
            "encode",
            "encoding",
            "serialize",
        ],
        &[
            "decrypt",
            "decrypts",
            "decrypted",
            "decryption",
            "decode",
            "decoding",
            "deserialize",
        ],
    ),
    (&["max", "maximum"], &["min", "minimum"]),
    (&["ascending", "asc"], &["descending", "desc"]),
    (
        &["gain", "gains", "gained", "win", "wins", "won", "winning"],
        &["lose", "loses", "lost", "losing", "loss"],
    ),
    (
        &["import", "imports", "importing", "imported"],
        &["export", "exports", "exporting", "exported"],
    ),
    (
        &["deep", "deeper", "deepest"],
        &["shallow", "shallower", "shallowest"],
    ),
    (
        &[
            "start",
            "starts",
            "started",
            "starting",
            "begin",
            "begins",
            "beginning",
            "open",
            "opens",
            "opening",
        ],
        &[
            "end", "ends", "ended", "ending", "stop", "stops", "stopped", "stopping", "finish",
            "close", "closes", "closing",
        ],
    ),
    (
        &["buy", "buys", "buying", "bought", "purchase", "buyer"],
        &["sell", "sells", "selling", "sold", "seller"],
    ),
    (
        &[
            "push",
            "pushes",
            "pushing",
            "upload",
            "uploads",
            "uploading",
            "send",
            "sends",
            "sending",
        ],
        &[
            "pull",
            "pulls",
            "pulling",
            "download",
            "downloads",
            "downloading",
            "receive",
            "receives",
            "receiving",
        ],
    ),
    (
        &["old", "older", "oldest", "ancient"],
        &[
            "young", "younger", "youngest", "new", "newer", "newest", "modern",
        ],
    ),
    (
        &["long", "longer", "longest", "tall", "taller", "tallest"],
        &["short", "shorter", "shortest"],
    ),
    (
        &["strong", "stronger", "strongest"],
        &["weak", "weaker", "weakest"],
    ),
    (
        &["rich", "richer", "richest", "wealthy", "wealthiest"],
        &["poor", "poorer", "poorest"],
    ),
    (
        &[
            "big", "bigger", "biggest", "large", "larger", "largest", "huge",
        ],
        &["small", "smaller", "smallest", "little", "tiny"],
    ),
    (
        &["heavy", "heavier", "heaviest"],
        &["light", "lighter", "lightest"],
    ),
    (
        &["cheap", "cheaper", "cheapest", "inexpensive"],
        &["expensive", "pricey", "costly"],
    ),
    (
        &["easy", "easier", "easiest", "simple", "simpler", "simplest"],
        &["hard", "harder", "hardest", "difficult", "complex"],
    ),
    (
        &["early", "earlier", "earliest"],
        &["late", "later", "latest"],
    ),
    (
        &["safe", "safer", "safest", "safety"],
        &["dangerous", "risky", "riskier"],
    ),
    (
        &["smart", "smarter", "smartest", "intelligent", "clever"],
        &["dumb", "dumber", "stupid", "stupider"],
    ),
    (
        &["bright", "brighter", "brightest", "light"],
        &["dim", "dimmer", "dimmest", "dark", "darker", "darkest"],
    ),
    (
        &["loud", "louder", "loudest", "noisy"],
        &["quiet", "quieter", "quietest", "silent"],
    ),
    (
        &["dense", "denser", "densest", "thick", "thicker"],
        &["sparse", "thin", "thinner"],
    ),
    (
        &["more", "greater", "over", "above", "exceed", "exceeds"],
        &["fewer", "less", "under", "below"],
    ),
    (&["most"], &["least"]),
    (
        &[
            "love", "loves", "loved", "like", "likes", "liked", "enjoy", "enjoys",
        ],
        &["hate", "hates", "hated", "dislike", "dislikes"],
    ),
    (
        &[
            "include",
            "includes",
            "included",
            "including",
            "add",
            "adds",
            "adding",
            "insert",
            "create",
            "creates",
            "creating",
        ],
        &[
            "exclude",
            "excludes",
            "excluded",
            "excluding",
            "remove",
            "removes",
            "removing",
            "delete",
            "deletes",
            "deleting",
            "drop",
        ],
    ),
    (
        &[
            "accept", "accepts", "accepted", "approve", "approves", "approved", "allow", "allows",
            "allowed",
        ],
        &[
            "reject",
            "rejects",
            "rejected",
            "rejecting",
            "deny",
            "denies",
            "denied",
            "decline",
            "block",
        ],
    ),
    (&["before", "prior"], &["after"]),
    (&["north", "northern"], &["south", "southern"]),
    (&["east", "eastern"], &["west", "western"]),
    (&["left"], &["right"]),
    (&["true", "truth"], &["false", "lie"]),
    (&["positive"], &["negative"]),
    (&["public"], &["private"]),
    (&["internal", "inner"], &["external", "outer"]),
    (&["input", "inputs"], &["output", "outputs"]),
    (
        &["read", "reads", "reading"],
        &["write", "writes", "writing"],
    ),
    (
        &["compress", "compresses", "compressed", "compression", "zip"],
        &[
            "decompress",
            "decompresses",
            "decompressed",
            "decompression",
            "unzip",
            "extract",
        ],
    ),
    (
        &["catch", "catches", "handle", "handles"],
        &["raise", "throw", "throws"],
    ),
    (
        &["recursive", "recursively", "recursion"],
        &["iterative", "iteratively", "iteration", "loop"],
    ),
    (&["formal", "formally"], &["casual", "informal", "casually"]),
    (
        &["happy", "happier", "happiest", "happiness"],
        &["sad", "sadder", "saddest", "sadness"],
    ),
    (
        &["healthy", "healthier", "healthiest"],
        &["unhealthy", "unhealthier"],
    ),
    (
        &["success", "successful", "succeed"],
        &["failure", "unsuccessful"],
    ),
    (&["odd"], &["even"]),
    (&["upper", "uppercase"], &["lower", "lowercase"]),
    (
        &["sync", "synchronous", "synchronously"],
        &["async", "asynchronous", "asynchronously"],
    ),
    (
        &["client", "frontend", "front-end"],
        &["server", "backend", "back-end"],
    ),
    (&["mean", "average"], &["median"]),
    (&["time"], &["space"]),
    (&["strict", "harsh"], &["kind", "gentle", "lenient"]),
    (&["supportive", "encouraging"], &["sarcastic", "critical"]),
    (
        &["skeptic", "skeptical", "sceptic"],
        &["activist", "believer", "supporter"],
    ),
    (&["future"], &["past"]),
    (&["binary"], &["linear"]),
    (&["stack"], &["queue"]),
    (&["circle", "round"], &["square", "rectangle"]),
];

/// Single-class word lists: each word is its own side unless grouped.
const SETS: &[(u16, &[&[&str]])] = &[
    (
        TIME,
        &[
            &["yesterday"],
            &["today", "now", "currently", "nowadays"],
            &["tonight"],
            &["tomorrow"],
        ],
    ),
    (
        MONTH,
        &[
            &["january", "jan"],
            &["february", "feb"],
            &["march"],
            &["april", "apr"],
            &["may"],
            &["june", "jun"],
            &["july", "jul"],
            &["august", "aug"],
            &["september", "sep", "sept"],
            &["october", "oct"],
            &["november", "nov"],
            &["december", "dec"],
        ],
    ),
    (
        WEEKDAY,
        &[
            &["monday", "mondays"],
            &["tuesday", "tuesdays"],
            &["wednesday", "wednesdays"],
            &["thursday", "thursdays"],
            &["friday", "fridays"],
            &["saturday", "saturdays"],
            &["sunday", "sundays"],
            &["weekday", "weekdays"],
            &["weekend", "weekends"],
        ],
    ),
    (
        SEASON,
        &[&["spring"], &["summer"], &["autumn", "fall"], &["winter"]],
    ),
    (
        DAYPART,
        &[
            &["morning", "mornings"],
            &["afternoon", "afternoons", "noon", "midday"],
            &["evening", "evenings", "pm"],
            &["night", "nights", "midnight", "overnight"],
        ],
    ),
    (
        MEAL,
        &[
            &["breakfast"],
            &["brunch"],
            &["lunch"],
            &["dinner", "supper"],
            &["snack", "snacks"],
        ],
    ),
    (
        SCOPE,
        &[
            &[
                "all",
                "every",
                "each",
                "everyone",
                "everybody",
                "everything",
                "entire",
                "whole",
            ],
            &[
                "some",
                "several",
                "certain",
                "someone",
                "somebody",
                "something",
            ],
            &["most", "majority"],
            &["many"],
            &["few"],
            &["both"],
            &["either"],
            &["any", "anyone", "anybody", "anything"],
            &["only"],
            &["one", "single"],
        ],
    ),
    (
        FREQUENCY,
        &[
            &["always", "constantly"],
            &[
                "usually",
                "normally",
                "typically",
                "generally",
                "often",
                "frequently",
            ],
            &["sometimes", "occasionally"],
            &["rarely", "seldom"],
        ],
    ),
    (
        SEQUENCE,
        &[
            &["first", "initial"],
            &["second"],
            &["third"],
            &["fourth"],
            &["fifth"],
            &["sixth"],
            &["seventh"],
            &["eighth"],
            &["ninth"],
            &["tenth"],
            &["next", "following", "upcoming"],
            &["last", "final", "latest", "previous", "prior"],
        ],
    ),
    (
        UNIT,
        &[
            &[
                "km",
                "kms",
                "kilometer",
                "kilometers",
                "kilometre",
                "kilometres",
            ],
            &["mile", "miles", "mi"],
            &["m", "meter", "meters", "metre", "metres"],
            &[
                "cm",
                "centimeter",
                "centimeters",
                "centimetre",
                "centimetres",
            ],
            &[
                "mm",
                "millimeter",
                "millimeters",
                "millimetre",
                "millimetres",
            ],
            &["inch", "inches"],
            &["ft", "foot", "feet"],
            &["yd", "yard", "yards"],
            &["kg", "kgs", "kilogram", "kilograms", "kilo", "kilos"],
            &["g", "gram", "grams"],
            &["mg", "milligram", "milligrams"],
            &["lb", "lbs", "pound", "pounds"],
            &["oz", "ounce", "ounces"],
            &["ton", "tons", "tonne", "tonnes"],
            &["l", "liter", "liters", "litre", "litres"],
            &[
                "ml",
                "milliliter",
                "milliliters",
                "millilitre",
                "millilitres",
            ],
            &["gallon", "gallons", "gal"],
            &["pint", "pints"],
            &["quart", "quarts"],
            &["cup", "cups"],
            &["tablespoon", "tablespoons", "tbsp"],
            &["teaspoon", "teaspoons", "tsp"],
            &["celsius", "centigrade"],
            &["fahrenheit"],
            &["kelvin"],
            &["mph"],
            &["kph", "kmh", "km/h"],
            &["knot", "knots"],
            &["second", "seconds", "sec", "secs"],
            &["minute", "minutes", "mins"],
            &["hour", "hours", "hr", "hrs"],
            &["day", "days"],
            &["week", "weeks"],
            &["month", "months"],
            &["year", "years"],
            &["dollar", "dollars", "usd"],
            &["euro", "euros", "eur"],
            &["sterling", "gbp"],
            &["yen", "jpy"],
            &["yuan", "rmb", "cny"],
            &["rupee", "rupees", "inr"],
            &["franc", "francs", "chf"],
            &["bit", "bits"],
            &["byte", "bytes"],
            &["kb", "kilobyte", "kilobytes"],
            &["mb", "megabyte", "megabytes"],
            &["gb", "gigabyte", "gigabytes"],
            &["tb", "terabyte", "terabytes"],
            &["watt", "watts", "w"],
            &["kw", "kilowatt", "kilowatts"],
            &["kwh"],
            &["horsepower", "hp"],
            &["amp", "amps", "ampere", "amperes"],
            &["volt", "volts"],
            &["calorie", "calories", "kcal"],
            &["kilojoule", "kilojoules", "kj"],
            &["joule", "joules"],
            &["acre", "acres"],
            &["hectare", "hectares"],
            &["percent", "percentage"],
            &["radian", "radians"],
        ],
    ),
    (
        ROLE,
        &[
            &["child", "children", "kid", "kids", "toddler"],
            &["teenager", "teenagers", "teen", "teens"],
            &[
                "beginner",
                "beginners",
                "novice",
                "newbie",
                "layman",
                "layperson",
                "dummies",
            ],
            &[
                "expert",
                "experts",
                "professional",
                "specialist",
                "advanced",
            ],
            &["student", "students", "pupil"],
            &["teacher", "teachers", "professor", "instructor", "tutor"],
            &["parent", "parents"],
            &["mother", "mom", "mum"],
            &["father", "dad"],
            &["grandmother", "grandma", "granny"],
            &["grandfather", "grandpa"],
            &["doctor", "physician"],
            &["nurse"],
            &["patient"],
            &["lawyer", "attorney"],
            &["landlord", "landlady"],
            &["tenant", "renter"],
            &["employer"],
            &["employee", "worker"],
            &["manager", "boss", "supervisor"],
            &["intern"],
            &["ceo", "executive"],
            &["engineer", "developer", "programmer"],
            &["scientist", "researcher"],
            &["economist"],
            &["buyer", "purchaser"],
            &["seller", "vendor"],
            &["borrower"],
            &["lender"],
            &["interviewer"],
            &["candidate", "applicant", "interviewee"],
            &["plaintiff"],
            &["defendant"],
            &["host"],
            &["guest", "guests"],
            &["driver"],
            &["passenger"],
            &["sender"],
            &["recipient", "receiver"],
            &["client", "customer"],
            &["contractor"],
            &["author", "writer"],
            &["publisher"],
            &["franchisee"],
            &["franchisor"],
            &["mentor"],
            &["mentee"],
            &["referee", "umpire"],
            &["player"],
            &["attacker"],
            &["defender"],
            &["chef"],
            &["nutritionist", "dietitian"],
            &["athlete", "bodybuilder"],
            &["guide"],
            &["historian"],
            &["pirate"],
            &["robot"],
            &["poet"],
            &["salesperson", "salesman"],
            &["retiree", "pensioner"],
            &["investor"],
            &["owner"],
            &["friend"],
            &["husband"],
            &["wife"],
            &["son"],
            &["daughter"],
            &["brother"],
            &["sister"],
            &["neighbor", "neighbour"],
        ],
    ),
    (
        LANGUAGE,
        &[
            &["english"],
            &["french"],
            &["spanish"],
            &["german"],
            &["italian"],
            &["portuguese"],
            &["dutch"],
            &["russian"],
            &["ukrainian"],
            &["polish"],
            &["czech"],
            &["greek"],
            &["turkish"],
            &["arabic"],
            &["hebrew"],
            &["hindi"],
            &["bengali"],
            &["urdu"],
            &["chinese", "mandarin"],
            &["cantonese"],
            &["japanese"],
            &["korean"],
            &["vietnamese"],
            &["thai"],
            &["indonesian"],
            &["swedish"],
            &["norwegian"],
            &["danish"],
            &["finnish"],
            &["latin"],
            &["swahili"],
        ],
    ),
    (
        CODE_LANGUAGE,
        &[
            &["python", "py"],
            &["java"],
            &["javascript", "js", "node", "nodejs"],
            &["typescript", "ts"],
            &["rust"],
            &["golang"],
            &["c"],
            &["c++", "cpp"],
            &["c#", "csharp"],
            &["ruby"],
            &["php"],
            &["swift"],
            &["kotlin"],
            &["scala"],
            &["haskell"],
            &["perl"],
            &["r"],
            &["julia"],
            &["elixir"],
            &["erlang"],
            &["lua"],
            &["dart"],
            &["bash", "shell", "sh"],
            &["powershell"],
            &["sql"],
            &["objective-c", "objc"],
            &["html"],
            &["css"],
        ],
    ),
    (
        DATA_TYPE,
        &[
            &["string", "strings", "str", "text"],
            &["list", "lists", "array", "arrays", "vector", "vec"],
            &[
                "dictionary",
                "dictionaries",
                "dict",
                "dicts",
                "hashmap",
                "map",
                "maps",
            ],
            &["set", "sets"],
            &["tuple", "tuples"],
            &["integer", "integers", "int", "ints"],
            &["float", "floats", "double", "decimal"],
            &["boolean", "booleans", "bool"],
            &["file", "files"],
            &["directory", "directories", "folder", "folders"],
            &["json"],
            &["xml"],
            &["csv"],
            &["yaml"],
        ],
    ),
    (
        TEXT_KIND,
        &[
            &["poem", "poems", "poetry", "verse"],
            &["haiku"],
            &["sonnet"],
            &["limerick"],
            &["story", "stories", "tale"],
            &["essay", "essays"],
            &["joke", "jokes"],
            &["song", "songs", "lyrics"],
            &["letter"],
            &["email", "e-mail"],
            &["tweet"],
            &["speech", "toast"],
            &["summary", "summarize", "summarise"],
            &["review"],
            &["description"],
            &["quiz"],
            &["press"],
            &["resume", "cv"],
            &["note"],
        ],
    ),
    (
        TASK,
        &[
            &[
                "explain",
                "explains",
                "explanation",
                "describe",
                "describes",
                "clarify",
            ],
            &["draw", "diagram", "illustrate", "sketch", "chart"],
            &["enumerate"],
            &["translate", "translation"],
            &["calculate", "compute"],
            &["compare", "comparison"],
            &["debug", "fix", "repair", "troubleshoot"],
            &["refactor"],
            &["optimize", "optimise", "optimization"],
            &["test", "tests", "testing"],
            &["document", "documentation", "docstring", "docstrings"],
            &["implement", "implementation"],
            &["proofread"],
            &["outline"],
            &["analyze", "analyse", "analysis"],
            &["suggest", "recommend", "recommendation", "recommendations"],
        ],
    ),
];

type Entry = (&'static str, u16, u16);

/// The contrast classes and sides of a word (lowercase), as entries of the
/// lexicon table.
fn lexicon(w: &str) -> &'static [Entry] {
    let start = LEXICON.partition_point(|e| e.0 < w);
    let end = start + LEXICON[start..].partition_point(|e| e.0 == w);
    &LEXICON[start..end]
}

/// [`ANTONYMS`] and [`SETS`] as one table sorted by word, built at compile
/// time: an instance serves one call, so nothing is built at run time.
static LEXICON: [Entry; LEXICON_LEN] = build_lexicon();

const LEXICON_LEN: usize = {
    let mut n = 0;
    let mut i = 0;
    while i < ANTONYMS.len() {
        n += ANTONYMS[i].0.len() + ANTONYMS[i].1.len();
        i += 1;
    }
    let mut c = 0;
    while c < SETS.len() {
        let sides = SETS[c].1;
        let mut s = 0;
        while s < sides.len() {
            n += sides[s].len();
            s += 1;
        }
        c += 1;
    }
    n
};

const fn build_lexicon() -> [Entry; LEXICON_LEN] {
    let mut t: [Entry; LEXICON_LEN] = [("", 0, 0); LEXICON_LEN];
    let mut n = 0;
    let mut i = 0;
    while i < ANTONYMS.len() {
        let class = ANTONYM + i as u16;
        let (a, b) = ANTONYMS[i];
        let mut k = 0;
        while k < a.len() {
            t[n] = (a[k], class, 0);
            n += 1;
            k += 1;
        }
        k = 0;
        while k < b.len() {
            t[n] = (b[k], class, 1);
            n += 1;
            k += 1;
        }
        i += 1;
    }
    let mut c = 0;
    while c < SETS.len() {
        let (class, sides) = SETS[c];
        let mut side = 0;
        while side < sides.len() {
            let words = sides[side];
            let mut k = 0;
            while k < words.len() {
                t[n] = (words[k], class, side as u16);
                n += 1;
                k += 1;
            }
            side += 1;
        }
        c += 1;
    }
    // Heap sort.
    let mut end = LEXICON_LEN;
    let mut start = LEXICON_LEN / 2;
    while start > 0 {
        start -= 1;
        sift_down(&mut t, start, end);
    }
    while end > 1 {
        end -= 1;
        let top = t[0];
        t[0] = t[end];
        t[end] = top;
        sift_down(&mut t, 0, end);
    }
    t
}

const fn sift_down(t: &mut [Entry; LEXICON_LEN], mut root: usize, end: usize) {
    loop {
        let mut child = 2 * root + 1;
        if child >= end {
            return;
        }
        if child + 1 < end && entry_less(&t[child], &t[child + 1]) {
            child += 1;
        }
        if !entry_less(&t[root], &t[child]) {
            return;
        }
        let r = t[root];
        t[root] = t[child];
        t[child] = r;
        root = child;
    }
}

/// `a < b` by word (bytes), class, side.
const fn entry_less(a: &Entry, b: &Entry) -> bool {
    let (x, y) = (a.0.as_bytes(), b.0.as_bytes());
    let mut i = 0;
    while i < x.len() && i < y.len() {
        if x[i] != y[i] {
            return x[i] < y[i];
        }
        i += 1;
    }
    if x.len() != y.len() {
        return x.len() < y.len();
    }
    a.1 < b.1 || (a.1 == b.1 && a.2 < b.2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conflicts(a: &str, b: &str) -> Option<Guard> {
        let ab = conflict(a, b);
        assert_eq!(ab, conflict(b, a), "not symmetric: {a:?} / {b:?}");
        ab
    }

    #[test]
    fn same_questions_pass() {
        for (a, b) in [
            (
                "What is the capital of France?",
                "what's the capital city of France",
            ),
            ("Convert 5 km to miles", "convert 5 kilometres to miles"),
            (
                "How many kilometers are in 5 miles?",
                "Convert 5 miles to kilometers.",
            ),
            (
                "What is 30 °C in Fahrenheit?",
                "Convert 30 degrees Celsius to Fahrenheit.",
            ),
            (
                "Book flights from New York to London.",
                "Book flights to London from New York.",
            ),
            (
                "At sea level, what temperature does water boil at?",
                "What temperature does water boil at at sea level?",
            ),
            (
                "What are the health benefits of green tea?",
                "What health benefits does green tea have?",
            ),
            (
                "Give me three reasons to learn French.",
                "Give me 3 reasons to learn French.",
            ),
            ("What is 15 percent of 80?", "What is 15% of 80?"),
            ("What is 7 times 8?", "What is 7 multiplied by 8?"),
            (
                "What causes the seasons on Earth?",
                "What causes Earth's seasons?",
            ),
            (
                "Which snakes are not venomous?",
                "Which snakes aren't venomous?",
            ),
            (
                "Which mountain is the tallest in the world?",
                "What is the tallest mountain in the world?",
            ),
            (
                "Who painted the Mona Lisa?",
                "The Mona Lisa was painted by whom?",
            ),
            (
                "How do I convert a string to an integer in Java?",
                "In Java, how do I convert a string into an integer?",
            ),
            (
                "How do I avoid burnout at work?",
                "How can I prevent burnout at work?",
            ),
            (
                "What is the difference between cats and dogs?",
                "What is the difference between dogs and cats?",
            ),
        ] {
            assert_eq!(conflicts(a, b), None, "{a:?} / {b:?}");
        }
    }

    #[test]
    fn tokens_and_features() {
        let p = Prompt::parse("Don't use C++ or C# in the U.S.: it's $5, 5km/h!");
        let words: Vec<&str> = (0..p.toks.len()).map(|t| p.text(t)).collect();
        assert_eq!(
            words,
            [
                "don't", "use", "c++", "or", "c#", "in", "the", "u", "s", "it", "dollar", "5", "5",
                "km/h"
            ]
        );
        assert!(p.ops.is_empty(), "{:?}", p.ops);
        let p = Prompt::parse("Is a == b, or 5 - 3 > -2?");
        assert_eq!(p.ops, b"-==>");
        assert_eq!(stem("countries"), stem("country"));
        assert_eq!(stem("values"), "value");
        let sides = |w| lexicon(w).iter().map(|e| (e.1, e.2)).collect::<Vec<_>>();
        assert_eq!(sides("fastest"), sides("quick"));
        assert_ne!(sides("fastest"), sides("slowest"));
        assert_eq!(sides("second").len(), 2, "an ordinal and a unit");
        assert!(lexicon("the").is_empty());
        assert!(
            LEXICON
                .windows(2)
                .all(|w| (w[0].0, w[0].1, w[0].2) < (w[1].0, w[1].1, w[1].2))
        );
        for (word, class, side) in LEXICON.iter() {
            assert!(lexicon(word).contains(&(word, *class, *side)));
            assert_eq!(word.to_lowercase(), *word);
        }
    }
}
