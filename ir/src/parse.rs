//! The `.lsir` parser. Errors carry `line:col`; [`parse_and_verify`] also maps
//! verifier errors back to the line that defines the offending node.

use crate::dim::Dim;
use crate::dtype::DType;
use crate::graph::{Graph, NodeId, Program, ValueRef};
use crate::op::{AttrValue, Op};
use crate::symbols::DerivedSymbol;
use crate::types::TensorType;
use crate::verify::verify;
use std::collections::HashMap;
use std::fmt;

/// A syntax or semantic error at a position in `.lsir` text (1-based).
#[derive(Clone, Debug, PartialEq)]
pub struct ParseError {
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub col: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.col, self.message)
    }
}

impl std::error::Error for ParseError {}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Int(i64),
    Float(f64),
    Str(String),
    Value(usize, u32),
    Func(String),
    Punct(char),
    Eof,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Ident(s) => write!(f, "`{s}`"),
            Tok::Int(v) => write!(f, "`{v}`"),
            Tok::Float(v) => write!(f, "`{v:?}`"),
            Tok::Str(s) => write!(f, "string {s:?}"),
            Tok::Value(n, o) => write!(f, "`%{n}.{o}`"),
            Tok::Func(s) => write!(f, "`@{s}`"),
            Tok::Punct(c) => write!(f, "`{c}`"),
            Tok::Eof => write!(f, "end of file"),
        }
    }
}

struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: usize,
    col: usize,
}

impl Lexer<'_> {
    fn err(&self, message: String) -> ParseError {
        ParseError { line: self.line, col: self.col, message }
    }
    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }
    fn take_while(&mut self, f: impl Fn(char) -> bool) -> String {
        let mut s = String::new();
        while let Some(&c) = self.chars.peek() {
            if !f(c) {
                break;
            }
            s.push(c);
            self.bump();
        }
        s
    }
    fn ident(&mut self) -> String {
        self.take_while(|c| c.is_ascii_alphanumeric() || c == '_')
    }

    fn tokens(mut self) -> Result<Vec<(Tok, usize, usize)>, ParseError> {
        let mut out = Vec::new();
        loop {
            self.take_while(|c| c.is_whitespace());
            let (line, col) = (self.line, self.col);
            let Some(&c) = self.chars.peek() else {
                out.push((Tok::Eof, line, col));
                return Ok(out);
            };
            let tok = match c {
                '#' => {
                    self.take_while(|c| c != '\n');
                    continue;
                }
                c if c.is_ascii_alphabetic() || c == '_' => Tok::Ident(self.ident()),
                c if c.is_ascii_digit() => self.number()?,
                '%' => {
                    self.bump();
                    let digits = self.take_while(|c| c.is_ascii_digit());
                    let id = digits.parse().map_err(|_| self.err("expected a value number after `%`".into()))?;
                    let mut output = 0;
                    if self.chars.peek() == Some(&'.') {
                        self.bump();
                        let d = self.take_while(|c| c.is_ascii_digit());
                        output = d.parse().map_err(|_| self.err("expected an output index after `.`".into()))?;
                    }
                    Tok::Value(id, output)
                }
                '@' => {
                    self.bump();
                    let name = self.ident();
                    if name.is_empty() {
                        return Err(self.err("expected a function name after `@`".into()));
                    }
                    Tok::Func(name)
                }
                '"' => self.string()?,
                '(' | ')' | '{' | '}' | '[' | ']' | ',' | '=' | ':' | '*' | '+' | '-' => {
                    self.bump();
                    Tok::Punct(c)
                }
                other => return Err(self.err(format!("unexpected character {other:?}"))),
            };
            out.push((tok, line, col));
        }
    }

    fn number(&mut self) -> Result<Tok, ParseError> {
        let (line, col) = (self.line, self.col);
        let mut s = self.take_while(|c| c.is_ascii_digit());
        let mut is_float = false;
        if self.chars.peek() == Some(&'.') {
            is_float = true;
            s.push('.');
            self.bump();
            s.push_str(&self.take_while(|c| c.is_ascii_digit()));
        }
        if matches!(self.chars.peek(), Some('e' | 'E')) {
            is_float = true;
            s.push('e');
            self.bump();
            if let Some(&sign @ ('+' | '-')) = self.chars.peek() {
                s.push(sign);
                self.bump();
            }
            s.push_str(&self.take_while(|c| c.is_ascii_digit()));
        }
        let bad = |_| ParseError { line, col, message: format!("malformed number `{s}`") };
        if is_float {
            s.parse().map(Tok::Float).map_err(bad)
        } else {
            s.parse().map(Tok::Int).map_err(|_| ParseError {
                line,
                col,
                message: format!("integer `{s}` is too large"),
            })
        }
    }

    fn string(&mut self) -> Result<Tok, ParseError> {
        self.bump();
        let mut s = String::new();
        loop {
            match self.bump() {
                None => return Err(self.err("unterminated string".into())),
                Some('"') => return Ok(Tok::Str(s)),
                Some('\\') => match self.bump() {
                    Some('"') => s.push('"'),
                    Some('\\') => s.push('\\'),
                    Some('n') => s.push('\n'),
                    Some('t') => s.push('\t'),
                    Some('u') => {
                        if self.bump() != Some('{') {
                            return Err(self.err("expected `{` after `\\u`".into()));
                        }
                        let hex = self.take_while(|c| c.is_ascii_hexdigit());
                        if self.bump() != Some('}') {
                            return Err(self.err("expected `}` to close `\\u{`".into()));
                        }
                        let ch = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32);
                        s.push(ch.ok_or_else(|| self.err(format!("`\\u{{{hex}}}` is not a character")))?);
                    }
                    other => return Err(self.err(format!("unknown escape {other:?} in string"))),
                },
                Some(c) => s.push(c),
            }
        }
    }
}

struct Parser {
    toks: Vec<(Tok, usize, usize)>,
    pos: usize,
    node_pos: Positions,
}

type PResult<T> = Result<T, ParseError>;

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos].0
    }
    fn peek2(&self) -> &Tok {
        &self.toks[(self.pos + 1).min(self.toks.len() - 1)].0
    }
    fn here(&self) -> (usize, usize) {
        (self.toks[self.pos].1, self.toks[self.pos].2)
    }
    fn err<T>(&self, message: String) -> PResult<T> {
        let (line, col) = self.here();
        Err(ParseError { line, col, message })
    }
    fn next(&mut self) -> Tok {
        let t = self.toks[self.pos].0.clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }
    fn expect(&mut self, c: char) -> PResult<()> {
        if *self.peek() == Tok::Punct(c) {
            self.next();
            Ok(())
        } else {
            self.err(format!("expected `{c}`, found {}", self.peek()))
        }
    }
    fn eat(&mut self, c: char) -> bool {
        if *self.peek() == Tok::Punct(c) {
            self.next();
            true
        } else {
            false
        }
    }
    fn keyword(&mut self, kw: &str) -> PResult<()> {
        match self.peek() {
            Tok::Ident(s) if s == kw => {
                self.next();
                Ok(())
            }
            t => self.err(format!("expected `{kw}`, found {t}")),
        }
    }

    fn program(&mut self) -> PResult<Program> {
        self.keyword("lsir")?;
        match self.next() {
            Tok::Int(1) => {}
            _ => {
                self.pos -= 1;
                return self.err("unsupported format version (this lsc reads `lsir 1`)".into());
            }
        }
        let mut symbols = Vec::new();
        while *self.peek() == Tok::Ident("symbol".into()) {
            symbols.push(self.derived_symbol()?);
        }
        let mut graphs: Vec<Graph> = Vec::new();
        while *self.peek() != Tok::Eof {
            let g = self.graph(graphs.len())?;
            if graphs.iter().any(|o| o.name == g.name) {
                return self.err(format!("graph @{} is defined twice", g.name));
            }
            graphs.push(g);
        }
        let main_at = graphs.iter().position(|g| g.name == "main");
        let Some(i) = main_at else { return self.err("the file defines no `graph @main`".into()) };
        let main = graphs.remove(i);
        // Keep node positions keyed by the final program order (main first).
        let remap = |gi: usize| {
            if gi == i {
                0
            } else if gi < i {
                gi + 1
            } else {
                gi
            }
        };
        self.node_pos = self.node_pos.drain().map(|((g, n), p)| ((remap(g), n), p)).collect();
        Ok(Program { main, functions: graphs, symbols })
    }

    /// `symbol K = max(1, round(0.75*T))`
    fn derived_symbol(&mut self) -> PResult<DerivedSymbol> {
        self.keyword("symbol")?;
        let name = match self.next() {
            Tok::Ident(n) => n,
            t => {
                self.pos -= 1;
                return self.err(format!("expected a symbol name, found {t}"));
            }
        };
        self.expect('=')?;
        self.keyword("max")?;
        self.expect('(')?;
        let neg = self.eat('-');
        let min = match self.next() {
            Tok::Int(v) => {
                if neg {
                    -v
                } else {
                    v
                }
            }
            t => {
                self.pos -= 1;
                return self.err(format!("expected an integer lower bound, found {t}"));
            }
        };
        self.expect(',')?;
        self.keyword("round")?;
        self.expect('(')?;
        let fraction = match self.next() {
            Tok::Float(v) => v,
            t => {
                self.pos -= 1;
                return self.err(format!("expected a fraction such as 0.75, found {t}"));
            }
        };
        self.expect('*')?;
        let of = self.dim()?;
        self.expect(')')?;
        self.expect(')')?;
        Ok(DerivedSymbol { name, of, fraction, min })
    }

    fn graph(&mut self, index: usize) -> PResult<Graph> {
        self.keyword("graph")?;
        let name = match self.next() {
            Tok::Func(n) => n,
            t => {
                self.pos -= 1;
                return self.err(format!("expected a graph name like @main, found {t}"));
            }
        };
        self.expect('{')?;
        let mut g = Graph::new(&name);
        let mut ids: HashMap<usize, NodeId> = HashMap::new();
        loop {
            match self.peek().clone() {
                Tok::Punct('}') => {
                    self.next();
                    return Ok(g);
                }
                Tok::Ident(kw) if kw == "output" => {
                    self.next();
                    let out_name = self.string()?;
                    self.expect('=')?;
                    let v = self.value_ref(&g, &ids)?;
                    g.outputs.push((out_name, v));
                }
                Tok::Value(id, 0) => {
                    let pos = self.here();
                    self.next();
                    if ids.contains_key(&id) {
                        return Err(ParseError { line: pos.0, col: pos.1, message: format!("%{id} is defined twice") });
                    }
                    self.expect('=')?;
                    let n = self.node(&mut g, &ids)?;
                    self.node_pos.insert((index, n.index()), pos);
                    ids.insert(id, n);
                }
                t => return self.err(format!("expected `%N = ...`, `output` or `}}`, found {t}")),
            }
        }
    }

    fn string(&mut self) -> PResult<String> {
        match self.next() {
            Tok::Str(s) => Ok(s),
            t => {
                self.pos -= 1;
                self.err(format!("expected a quoted name, found {t}"))
            }
        }
    }

    fn value_ref(&mut self, g: &Graph, ids: &HashMap<usize, NodeId>) -> PResult<ValueRef> {
        match self.peek().clone() {
            Tok::Value(id, output) => {
                let Some(&node) = ids.get(&id) else {
                    return self.err(format!("%{id} is used before it is defined"));
                };
                if output as usize >= g.node(node).outputs.len() {
                    return self
                        .err(format!("%{id} has {} output(s); .{output} does not exist", g.node(node).outputs.len()));
                }
                self.next();
                Ok(ValueRef { node, output })
            }
            t => self.err(format!("expected a value like %3, found {t}")),
        }
    }

    fn node(&mut self, g: &mut Graph, ids: &HashMap<usize, NodeId>) -> PResult<NodeId> {
        let op_pos = self.pos;
        let op_name = match self.next() {
            Tok::Ident(s) => s,
            t => {
                self.pos -= 1;
                return self.err(format!("expected an op name, found {t}"));
            }
        };
        let leaf_name = if matches!(self.peek(), Tok::Str(_)) { Some(self.string()?) } else { None };
        let mut operands = Vec::new();
        if self.eat('(') && !self.eat(')') {
            loop {
                operands.push(self.value_ref(g, ids)?);
                if self.eat(')') {
                    break;
                }
                self.expect(',')?;
            }
        }
        let mut attrs = Vec::new();
        if self.eat('{') {
            loop {
                let key = match self.next() {
                    Tok::Ident(k) => k,
                    t => {
                        self.pos -= 1;
                        return self.err(format!("expected an attribute name, found {t}"));
                    }
                };
                self.expect('=')?;
                attrs.push((key, self.attr()?));
                if self.eat('}') {
                    break;
                }
                self.expect(',')?;
            }
        }
        self.expect(':')?;
        let outputs = if self.eat('(') {
            let mut ts = vec![self.tensor_type()?];
            while self.eat(',') {
                ts.push(self.tensor_type()?);
            }
            self.expect(')')?;
            ts
        } else {
            vec![self.tensor_type()?]
        };
        let op = Op::from_parts(&op_name, leaf_name, attrs).map_err(|message| {
            let (_, line, col) = self.toks[op_pos];
            ParseError { line, col, message }
        })?;
        Ok(g.add_node(op, &operands, outputs))
    }

    fn attr(&mut self) -> PResult<AttrValue> {
        match self.peek().clone() {
            Tok::Punct('[') => {
                self.next();
                let mut items = Vec::new();
                if !self.eat(']') {
                    loop {
                        items.push(self.attr()?);
                        if self.eat(']') {
                            break;
                        }
                        self.expect(',')?;
                    }
                }
                Ok(AttrValue::List(items))
            }
            Tok::Func(f) => {
                self.next();
                Ok(AttrValue::Func(f))
            }
            Tok::Float(v) => {
                self.next();
                Ok(AttrValue::Float(v))
            }
            Tok::Punct('-') if matches!(self.peek2(), Tok::Float(_)) || *self.peek2() == Tok::Ident("inf".into()) => {
                self.next();
                match self.next() {
                    Tok::Float(v) => Ok(AttrValue::Float(-v)),
                    _ => Ok(AttrValue::Float(f64::NEG_INFINITY)),
                }
            }
            Tok::Ident(w) if w == "true" || w == "false" => {
                self.next();
                Ok(AttrValue::Bool(w == "true"))
            }
            Tok::Ident(w) if w == "inf" || w == "NaN" => {
                self.next();
                Ok(AttrValue::Float(if w == "inf" { f64::INFINITY } else { f64::NAN }))
            }
            _ => Ok(AttrValue::Dim(self.dim()?)),
        }
    }

    fn dim_term(&mut self) -> PResult<Dim> {
        match self.next() {
            Tok::Int(k) => {
                if self.eat('*') {
                    match self.next() {
                        Tok::Ident(s) => Ok(Dim::sym(&s).scale(k)),
                        t => {
                            self.pos -= 1;
                            self.err(format!("expected a symbol after `*`, found {t}"))
                        }
                    }
                } else {
                    Ok(Dim::new(k))
                }
            }
            Tok::Ident(s) => Ok(Dim::sym(&s)),
            t => {
                self.pos -= 1;
                self.err(format!("expected a dimension (a number, a symbol like T, or P+T), found {t}"))
            }
        }
    }

    fn dim(&mut self) -> PResult<Dim> {
        let mut d = if self.eat('-') { self.dim_term()?.scale(-1) } else { self.dim_term()? };
        loop {
            if self.eat('+') {
                d = d + self.dim_term()?;
            } else if self.eat('-') {
                d = d - self.dim_term()?;
            } else {
                return Ok(d);
            }
        }
    }

    fn tensor_type(&mut self) -> PResult<TensorType> {
        let dtype: DType = match self.next() {
            Tok::Ident(s) => match s.parse() {
                Ok(d) => d,
                Err(m) => {
                    self.pos -= 1;
                    return self.err(m);
                }
            },
            t => {
                self.pos -= 1;
                return self.err(format!("expected a tensor type like f32[B,T,64], found {t}"));
            }
        };
        self.expect('[')?;
        let mut shape = Vec::new();
        if !self.eat(']') {
            loop {
                shape.push(self.dim()?);
                if self.eat(']') {
                    break;
                }
                self.expect(',')?;
            }
        }
        Ok(TensorType { dtype, shape })
    }
}

/// (graph index, node index) → (line, col) of each node's definition.
type Positions = HashMap<(usize, usize), (usize, usize)>;

fn parse_with_positions(text: &str) -> PResult<(Program, Positions)> {
    let toks = Lexer { chars: text.chars().peekable(), line: 1, col: 1 }.tokens()?;
    let mut p = Parser { toks, pos: 0, node_pos: HashMap::new() };
    let prog = p.program()?;
    Ok((prog, p.node_pos))
}

/// Parses `.lsir` text into a program without verifying it.
pub fn parse_program(text: &str) -> PResult<Program> {
    parse_with_positions(text).map(|(p, _)| p)
}

/// Parses and verifies; a verifier error is reported at the line of the node it names.
pub fn parse_and_verify(text: &str) -> PResult<Program> {
    let (prog, pos) = parse_with_positions(text)?;
    if let Err(e) = verify(&prog) {
        let gi = prog.graphs().position(|g| g.name == e.graph).unwrap_or(0);
        let (line, col) = e.node.as_ref().and_then(|(n, _)| pos.get(&(gi, *n)).copied()).unwrap_or((1, 1));
        return Err(ParseError { line, col, message: e.to_string() });
    }
    Ok(prog)
}
