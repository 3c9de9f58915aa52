//! Constrained decoding: a byte-level recogniser of the JSON texts a schema allows, used by the
//! embedded model to mask every token that would break the schema, so its answer always parses.
//!
//! The recogniser accepts compact JSON only (no whitespace between tokens) and writes every
//! member of an object, in the schema's order: with required members first-class and no
//! whitespace to wander into, a 135M-parameter model spends its few good tokens on content.
//! Its state is a small `Copy` value, so checking a token is a copy and a few byte steps; the
//! embedded model checks every token of its vocabulary this way at each step.

use serde_json::Value;

/// Longest string the recogniser lets a model write when the schema sets no `maxLength`.
const DEFAULT_MAX_STRING: u16 = 1000;
/// Longest array when the schema sets no `maxItems`.
const DEFAULT_MAX_ITEMS: u16 = 20;
const MAX_DIGITS: u8 = 15;
const MAX_DEPTH: usize = 8;

#[derive(Debug)]
enum Node {
    /// Members in order: the literal that introduces each (`{"key":` or `,"key":`) and its node.
    Object(Vec<(Vec<u8>, usize)>),
    Array {
        item: usize,
        max_items: u16,
    },
    String {
        max_len: u16,
    },
    /// The allowed JSON texts (an `enum`, or `true`/`false`); none is a prefix of another.
    Literals(Vec<Vec<u8>>),
    Number {
        integer: bool,
    },
}

/// A schema compiled for decoding.
#[derive(Debug)]
pub struct Grammar {
    nodes: Vec<Node>,
}

impl Grammar {
    /// Compiles the subset of [`crate::schema`]; anything else is an error naming the path.
    pub fn compile(schema: &Value) -> Result<Grammar, String> {
        let mut grammar = Grammar { nodes: Vec::new() };
        grammar.add(schema, "$")?;
        Ok(grammar)
    }

    fn add(&mut self, schema: &Value, path: &str) -> Result<usize, String> {
        let node = if let Some(options) = schema.get("enum").and_then(Value::as_array) {
            let literals: Vec<Vec<u8>> = options.iter().map(|o| o.to_string().into_bytes()).collect();
            if literals.is_empty() || !options.iter().all(|o| o.is_string()) {
                return Err(format!("{path}: enum must list strings"));
            }
            Node::Literals(literals)
        } else {
            match schema.get("type").and_then(Value::as_str) {
                Some("object") => {
                    let mut members = Vec::new();
                    let properties = schema.get("properties").and_then(Value::as_object);
                    // JSON objects have no order, so members come in `required`'s order, then
                    // the rest by name: a schema lists the member it wants written first first.
                    let mut names: Vec<&String> = Vec::new();
                    for name in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
                        if let Some((key, _)) =
                            properties.and_then(|p| p.get_key_value(name.as_str().unwrap_or_default()))
                        {
                            names.push(key);
                        }
                    }
                    for key in properties.into_iter().flat_map(|p| p.keys()) {
                        if !names.contains(&key) {
                            names.push(key);
                        }
                    }
                    for (i, name) in names.into_iter().enumerate() {
                        let member = properties.and_then(|p| p.get(name)).unwrap_or(&Value::Null);
                        let child = self.add(member, &format!("{path}.{name}"))?;
                        let intro = format!("{}{}:", if i == 0 { "{" } else { "," }, Value::String(name.clone()));
                        members.push((intro.into_bytes(), child));
                    }
                    Node::Object(members)
                }
                Some("array") => {
                    let items = schema
                        .get("items")
                        .ok_or_else(|| format!("{path}: array without items"))?;
                    let item = self.add(items, &format!("{path}[]"))?;
                    let max_items = schema
                        .get("maxItems")
                        .and_then(Value::as_u64)
                        .map_or(DEFAULT_MAX_ITEMS, |n| n.min(u16::MAX.into()) as u16);
                    Node::Array { item, max_items }
                }
                Some("string") => Node::String {
                    max_len: schema
                        .get("maxLength")
                        .and_then(Value::as_u64)
                        .map_or(DEFAULT_MAX_STRING, |n| n.min(u16::MAX.into()) as u16),
                },
                Some("boolean") => Node::Literals(vec![b"true".to_vec(), b"false".to_vec()]),
                Some("integer") => Node::Number { integer: true },
                Some("number") => Node::Number { integer: false },
                other => return Err(format!("{path}: type {other:?} cannot be decoded")),
            }
        };
        self.nodes.push(node);
        Ok(self.nodes.len() - 1)
    }

    pub fn start(&self) -> State {
        let mut state = State {
            frames: [Frame::Done; MAX_DEPTH],
            depth: 0,
        };
        state.push(self, self.nodes.len() - 1);
        state
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum StringPhase {
    Open,
    Body,
    Escape,
    Unicode(u8),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum ArrayPhase {
    Open,
    First,
    AfterItem,
    NeedItem,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum NumberPhase {
    Sign,
    Minus,
    /// The integer part is `0`: no more digits may follow it.
    Zero,
    Int(u8),
    Dot,
    Frac(u8),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Frame {
    Done,
    /// Inside member `member`'s introduction (or the closing `}` when past the last member),
    /// `pos` bytes in.
    Object {
        node: u16,
        member: u8,
        pos: u8,
    },
    Array {
        node: u16,
        count: u16,
        phase: ArrayPhase,
    },
    String {
        node: u16,
        len: u16,
        phase: StringPhase,
    },
    /// `alive` has a bit per literal still matching after `pos` bytes.
    Literal {
        node: u16,
        pos: u8,
        alive: u32,
    },
    Number {
        node: u16,
        phase: NumberPhase,
    },
}

/// Where a decoder is in the text: a stack of frames, `Copy` so a token can be tried on a copy.
#[derive(Clone, Copy, Debug)]
pub struct State {
    frames: [Frame; MAX_DEPTH],
    depth: usize,
}

impl State {
    /// The whole value has been written.
    pub fn is_complete(&self) -> bool {
        self.depth == 0
    }

    fn push(&mut self, grammar: &Grammar, node: usize) -> bool {
        if self.depth == MAX_DEPTH {
            return false;
        }
        let id = node as u16;
        self.frames[self.depth] = match &grammar.nodes[node] {
            Node::Object(_) => Frame::Object {
                node: id,
                member: 0,
                pos: 0,
            },
            Node::Array { .. } => Frame::Array {
                node: id,
                count: 0,
                phase: ArrayPhase::Open,
            },
            Node::String { .. } => Frame::String {
                node: id,
                len: 0,
                phase: StringPhase::Open,
            },
            Node::Literals(options) => Frame::Literal {
                node: id,
                pos: 0,
                alive: if options.len() >= 32 {
                    u32::MAX
                } else {
                    (1u32 << options.len()) - 1
                },
            },
            Node::Number { .. } => Frame::Number {
                node: id,
                phase: NumberPhase::Sign,
            },
        };
        self.depth += 1;
        true
    }

    /// Whether `bytes` can come next; advances only if all of them can.
    pub fn accepts(&mut self, grammar: &Grammar, bytes: &[u8]) -> bool {
        let mut next = *self;
        for &byte in bytes {
            if !next.feed(grammar, byte) {
                return false;
            }
        }
        *self = next;
        true
    }

    /// Feeds one byte; false if the schema does not allow it here.
    pub fn feed(&mut self, grammar: &Grammar, byte: u8) -> bool {
        loop {
            if self.depth == 0 {
                return false;
            }
            let top = self.depth - 1;
            match self.step(grammar, top, byte) {
                Step::Took => return true,
                Step::TookAndPop => {
                    self.depth -= 1;
                    return true;
                }
                Step::TookAndPush(child) => return self.push(grammar, child),
                Step::Push(child) => {
                    if !self.push(grammar, child) {
                        return false;
                    }
                }
                // A number ends where a byte it cannot take begins: hand the byte up.
                Step::EndedBefore => self.depth -= 1,
                Step::Rejected => return false,
            }
        }
    }

    fn step(&mut self, grammar: &Grammar, top: usize, byte: u8) -> Step {
        let frame = &mut self.frames[top];
        match *frame {
            Frame::Done => Step::Rejected,
            Frame::Object { node, member, pos } => {
                let Node::Object(members) = &grammar.nodes[node as usize] else {
                    return Step::Rejected;
                };
                let (literal, child): (&[u8], Option<usize>) = match members.get(member as usize) {
                    Some((intro, child)) => (intro, Some(*child)),
                    None if members.is_empty() => (b"{}", None),
                    None => (b"}", None),
                };
                if literal.get(pos as usize) != Some(&byte) {
                    return Step::Rejected;
                }
                if pos as usize + 1 < literal.len() {
                    *frame = Frame::Object {
                        node,
                        member,
                        pos: pos + 1,
                    };
                    return Step::Took;
                }
                match child {
                    Some(child) => {
                        *frame = Frame::Object {
                            node,
                            member: member + 1,
                            pos: 0,
                        };
                        Step::TookAndPush(child)
                    }
                    None => Step::TookAndPop,
                }
            }
            Frame::Array { node, count, phase } => {
                let Node::Array { item, max_items } = grammar.nodes[node as usize] else {
                    return Step::Rejected;
                };
                match (phase, byte) {
                    (ArrayPhase::Open, b'[') => {
                        *frame = Frame::Array {
                            node,
                            count,
                            phase: ArrayPhase::First,
                        };
                        Step::Took
                    }
                    (ArrayPhase::First | ArrayPhase::AfterItem, b']') => Step::TookAndPop,
                    (ArrayPhase::AfterItem, b',') if count < max_items => {
                        *frame = Frame::Array {
                            node,
                            count,
                            phase: ArrayPhase::NeedItem,
                        };
                        Step::Took
                    }
                    (ArrayPhase::First | ArrayPhase::NeedItem, _) if count < max_items => {
                        *frame = Frame::Array {
                            node,
                            count: count + 1,
                            phase: ArrayPhase::AfterItem,
                        };
                        Step::Push(item)
                    }
                    _ => Step::Rejected,
                }
            }
            Frame::String { node, len, phase } => {
                let Node::String { max_len } = grammar.nodes[node as usize] else {
                    return Step::Rejected;
                };
                let set = |frame: &mut Frame, len, phase| {
                    *frame = Frame::String { node, len, phase };
                    Step::Took
                };
                match (phase, byte) {
                    (StringPhase::Open, b'"') => set(frame, 0, StringPhase::Body),
                    (StringPhase::Body, b'"') => Step::TookAndPop,
                    (StringPhase::Body, _) if len >= max_len => Step::Rejected,
                    (StringPhase::Body, b'\\') => set(frame, len + 1, StringPhase::Escape),
                    (StringPhase::Body, 0..=0x1f) => Step::Rejected,
                    // A UTF-8 continuation byte does not start a new character.
                    (StringPhase::Body, 0x80..=0xbf) => set(frame, len, StringPhase::Body),
                    (StringPhase::Body, _) => set(frame, len + 1, StringPhase::Body),
                    (StringPhase::Escape, b'u') => set(frame, len, StringPhase::Unicode(4)),
                    (StringPhase::Escape, b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                        set(frame, len, StringPhase::Body)
                    }
                    (StringPhase::Unicode(left), b) if b.is_ascii_hexdigit() => {
                        let phase = if left == 1 {
                            StringPhase::Body
                        } else {
                            StringPhase::Unicode(left - 1)
                        };
                        set(frame, len, phase)
                    }
                    _ => Step::Rejected,
                }
            }
            Frame::Literal { node, pos, alive } => {
                let Node::Literals(options) = &grammar.nodes[node as usize] else {
                    return Step::Rejected;
                };
                let mut still = 0u32;
                let mut finished = false;
                for (i, option) in options.iter().enumerate().take(32) {
                    if alive & (1 << i) != 0 && option.get(pos as usize) == Some(&byte) {
                        still |= 1 << i;
                        finished |= option.len() == pos as usize + 1;
                    }
                }
                if still == 0 {
                    Step::Rejected
                } else if finished {
                    Step::TookAndPop
                } else {
                    *frame = Frame::Literal {
                        node,
                        pos: pos + 1,
                        alive: still,
                    };
                    Step::Took
                }
            }
            Frame::Number { node, phase } => {
                let Node::Number { integer } = grammar.nodes[node as usize] else {
                    return Step::Rejected;
                };
                let next = match (phase, byte) {
                    (NumberPhase::Sign, b'-') => Some(NumberPhase::Minus),
                    (NumberPhase::Sign | NumberPhase::Minus, b'0') => Some(NumberPhase::Zero),
                    (NumberPhase::Sign | NumberPhase::Minus, b'1'..=b'9') => Some(NumberPhase::Int(1)),
                    (NumberPhase::Int(n), b'0'..=b'9') if n < MAX_DIGITS => Some(NumberPhase::Int(n + 1)),
                    (NumberPhase::Zero | NumberPhase::Int(_), b'.') if !integer => Some(NumberPhase::Dot),
                    (NumberPhase::Dot, b'0'..=b'9') => Some(NumberPhase::Frac(1)),
                    (NumberPhase::Frac(n), b'0'..=b'9') if n < MAX_DIGITS => Some(NumberPhase::Frac(n + 1)),
                    _ => None,
                };
                match next {
                    Some(phase) => {
                        self.frames[top] = Frame::Number { node, phase };
                        Step::Took
                    }
                    None if matches!(phase, NumberPhase::Zero | NumberPhase::Int(_) | NumberPhase::Frac(_)) => {
                        Step::EndedBefore
                    }
                    None => Step::Rejected,
                }
            }
        }
    }

    /// The shortest text that completes the value from here: the decoder appends it when the
    /// model runs out of tokens, so even a cut-off answer parses.
    pub fn closing(&self, grammar: &Grammar) -> Vec<u8> {
        let mut out = Vec::new();
        for frame in self.frames[..self.depth].iter().rev() {
            match *frame {
                Frame::Done => {}
                Frame::Object { node, member, pos } => {
                    let Node::Object(members) = &grammar.nodes[node as usize] else {
                        continue;
                    };
                    match members.get(member as usize) {
                        Some((intro, child)) => {
                            out.extend_from_slice(&intro[pos as usize..]);
                            out.extend(minimal(grammar, *child));
                            for (intro, child) in &members[member as usize + 1..] {
                                out.extend_from_slice(intro);
                                out.extend(minimal(grammar, *child));
                            }
                            out.push(b'}');
                        }
                        None if members.is_empty() => out.extend_from_slice(&b"{}"[pos as usize..]),
                        None => out.push(b'}'),
                    }
                }
                Frame::Array { phase, .. } => match phase {
                    ArrayPhase::Open => out.extend_from_slice(b"[]"),
                    // A dangling comma: the shortest way on is to drop the last item's place,
                    // which bytes already written cannot do, so close with an empty value.
                    ArrayPhase::NeedItem => {
                        if let Frame::Array { node, .. } = frame
                            && let Node::Array { item, .. } = grammar.nodes[*node as usize]
                        {
                            out.extend(minimal(grammar, item));
                        }
                        out.push(b']');
                    }
                    _ => out.push(b']'),
                },
                Frame::String { phase, .. } => match phase {
                    StringPhase::Open => out.extend_from_slice(b"\"\""),
                    StringPhase::Body => out.push(b'"'),
                    StringPhase::Escape => out.extend_from_slice(b"\\\""),
                    StringPhase::Unicode(left) => {
                        out.extend(std::iter::repeat_n(b'0', left as usize));
                        out.push(b'"');
                    }
                },
                Frame::Literal { node, pos, alive } => {
                    let Node::Literals(options) = &grammar.nodes[node as usize] else {
                        continue;
                    };
                    if let Some(option) = options
                        .iter()
                        .enumerate()
                        .find(|(i, _)| alive & (1 << i) != 0)
                        .map(|(_, o)| o)
                    {
                        out.extend_from_slice(&option[pos as usize..]);
                    }
                }
                Frame::Number { phase, .. } => match phase {
                    NumberPhase::Sign | NumberPhase::Minus | NumberPhase::Dot => out.push(b'0'),
                    _ => {}
                },
            }
        }
        out
    }
}

/// The shortest valid text of a node.
fn minimal(grammar: &Grammar, node: usize) -> Vec<u8> {
    match &grammar.nodes[node] {
        Node::Object(members) if members.is_empty() => b"{}".to_vec(),
        Node::Object(members) => {
            let mut out = Vec::new();
            for (intro, child) in members {
                out.extend_from_slice(intro);
                out.extend(minimal(grammar, *child));
            }
            out.push(b'}');
            out
        }
        Node::Array { .. } => b"[]".to_vec(),
        Node::String { .. } => b"\"\"".to_vec(),
        Node::Literals(options) => options.first().cloned().unwrap_or_default(),
        Node::Number { .. } => b"0".to_vec(),
    }
}

enum Step {
    Took,
    TookAndPop,
    TookAndPush(usize),
    Push(usize),
    EndedBefore,
    Rejected,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "memories": {"type": "array", "maxItems": 3, "items": {
                    "type": "object",
                    "properties": {"text": {"type": "string", "maxLength": 10}, "kind": {"enum": ["FACT", "FAVOURITE"]}},
                    "required": ["text", "kind"]
                }},
                "score": {"type": "number"},
                "ok": {"type": "boolean"}
            },
            "required": ["memories", "score"]
        })
    }

    fn run(grammar: &Grammar, text: &str) -> Option<State> {
        let mut state = grammar.start();
        state.accepts(grammar, text.as_bytes()).then_some(state)
    }

    #[test]
    fn accepts_exactly_the_compact_texts_of_the_schema() {
        let grammar = Grammar::compile(&schema()).expect("compiles");
        let good = [
            r#"{"memories":[],"score":0,"ok":true}"#,
            r#"{"memories":[{"text":"a \"b\"\u00e9","kind":"FACT"},{"text":"","kind":"FAVOURITE"}],"score":-12.5,"ok":false}"#,
        ];
        for text in good {
            let state = run(&grammar, text).unwrap_or_else(|| panic!("rejected {text}"));
            assert!(state.is_complete(), "{text}");
            crate::schema::validate(&schema(), &serde_json::from_str(text).expect("json")).expect("valid");
        }
        let bad = [
            r#" {"#,                                     // whitespace
            r#"{"score":1"#,                             // members out of order
            r#"{"memories":[{"text":"12345678901""#,     // over maxLength
            r#"{"memories":[{"text":"a","kind":"FAC"}"#, // not an enum value
            r#"{"memories":[1"#,                         // wrong item type
            r#"{"memories":[],"score":1.,"#,             // a dot without digits
            r#"{"memories":[],"score":01"#,              // a leading zero
            r#"{"memories":[],"score":0,"ok":true}x"#,   // after the end
            "{\"memories\":[{\"text\":\"a\nb\"",         // raw control character
        ];
        for text in bad {
            assert!(run(&grammar, text).is_none(), "accepted {text:?}");
        }
        let four = r#"{"memories":[{"text":"","kind":"FACT"},{"text":"","kind":"FACT"},{"text":"","kind":"FACT"},"#;
        assert!(run(&grammar, four).is_none(), "more than maxItems");
    }

    #[test]
    fn a_rejected_token_leaves_the_state_alone() {
        let grammar = Grammar::compile(&schema()).expect("compiles");
        let mut state = grammar.start();
        assert!(state.accepts(&grammar, b"{\"mem"));
        assert!(!state.accepts(&grammar, b"ories\":x"));
        assert!(state.accepts(&grammar, b"ories\":[]"));
    }

    #[test]
    fn any_prefix_closes_into_a_valid_value() {
        let grammar = Grammar::compile(&schema()).expect("compiles");
        let full = r#"{"memories":[{"text":"ab\u00e9","kind":"FAVOURITE"},{"text":"x","kind":"FACT"}],"score":-1.25,"ok":true}"#;
        for cut in 0..full.len() {
            let mut state = grammar.start();
            assert!(
                state.accepts(&grammar, &full.as_bytes()[..cut]),
                "{cut}: {}",
                &full[..cut]
            );
            let mut text = full.as_bytes()[..cut].to_vec();
            text.extend(state.closing(&grammar));
            let value: Value = serde_json::from_slice(&text)
                .unwrap_or_else(|e| panic!("{cut}: {e}: {}", String::from_utf8_lossy(&text)));
            crate::schema::validate(&schema(), &value).unwrap_or_else(|e| panic!("{cut}: {e}"));
        }
    }

    #[test]
    fn unsupported_schemas_are_refused_with_their_path() {
        let error =
            Grammar::compile(&json!({"type": "object", "properties": {"a": {"type": "array"}}})).expect_err("no items");
        assert_eq!(error, "$.a: array without items");
    }
}
