//! A Python pickle reader that builds a value tree and never executes anything.
//!
//! `torch.save` writes its object graph as a pickle: tensors are calls to
//! `torch._utils._rebuild_tensor_v2` whose storages are persistent ids, modules are
//! `NEWOBJ` + `BUILD` with their `__dict__`, and so on. Running such a pickle means importing
//! and calling arbitrary Python; here every call is only *recorded* ([`Object`]) and the torch
//! layer ([`super::torch_file`]) recognises the few shapes it needs. That keeps untrusted
//! checkpoints harmless and lets pickles of classes we have never seen (the user's
//! `__main__.MLPClassifier`, `argparse.Namespace`, Python `set`s) load without special cases.
//!
//! Values live in an arena and refer to each other by [`Id`], because pickles mutate
//! containers after memoising them (`EMPTY_DICT`, `BINPUT`, …, `SETITEMS`) and share them
//! through the memo; an arena keeps every reference pointing at the one, final container.
//!
//! Supported: every opcode of protocols 0–5 except the extension registry (`EXT1/2/4`),
//! out-of-band buffers (`NEXT_BUFFER`) and the text `STRING`/`UNICODE` forms that need Python
//! escape decoding; those fail with the opcode's name and offset.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};

/// Index of a value in a [`Pickle`]'s arena.
pub type Id = usize;

/// The most values, stack slots, memo entries or marks one pickle may make. Every opcode adds
/// at most a few of each, so this bounds the parser's memory (about 100 bytes per value with
/// its stack slot and memo entry) whatever the input: a zip bomb inflating to millions of
/// `EMPTY_DICT`s stops here instead of exhausting memory. A real checkpoint's `data.pkl` needs
/// about 20 values per tensor: ESM-2 3B's ~600 tensors need ~12 000.
pub const MAX_VALUES: usize = 1 << 22;

/// The most bytes the parser may copy out of values already made (a `STACK_GLOBAL` copies its
/// module and name strings, a protocol-2 `copyreg.__newobj__` call its argument list). Each
/// such opcode is a few bytes that may name the same huge memoised value again, so without
/// this bound a small pickle could make copies of it without end.
const MAX_COPIED_BYTES: usize = 64 << 20;

/// One pickled value. Containers hold [`Id`]s into the same [`Pickle`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer that does not fit `i64`: little-endian two's complement bytes (`LONG1/4`).
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Id>),
    Tuple(Vec<Id>),
    Dict(Vec<(Id, Id)>),
    Set(Vec<Id>),
    FrozenSet(Vec<Id>),
    /// A reference to `module.name` (`GLOBAL` / `STACK_GLOBAL`), not imported. Python 2 module
    /// names written by protocol 2 (`__builtin__`) are mapped to their Python 3 names.
    Global {
        module: String,
        name: String,
    },
    /// A call that unpickling would perform (`REDUCE`, `NEWOBJ`, `INST`, `OBJ`), recorded.
    /// Boxed: it is the largest variant, and a small `Value` keeps the arena's memory per
    /// opcode low (see [`MAX_VALUES`]).
    Object(Box<Object>),
    /// A `PERSID` / `BINPERSID` reference; torch uses it for tensor storages.
    PersistentId(Id),
}

/// A recorded call and what the pickle did to its result afterwards.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Object {
    /// What was called: usually a [`Value::Global`].
    pub callable: Id,
    /// The positional arguments (a [`Value::Tuple`]).
    pub args: Id,
    /// Keyword arguments (`NEWOBJ_EX` only).
    pub kwargs: Option<Id>,
    /// `cls.__new__(cls, *args)` (`NEWOBJ`) rather than `callable(*args)` (`REDUCE`).
    pub new_obj: bool,
    /// The argument of `BUILD` (`__setstate__` / `__dict__` update), if any.
    pub state: Option<Id>,
    /// `obj[k] = v` from `SETITEM(S)` (how an `OrderedDict` gets its entries).
    pub items: Vec<(Id, Id)>,
    /// `obj.append(v)` / `obj.extend(..)` from `APPEND(S)`.
    pub appended: Vec<Id>,
}

/// A parsed pickle: the value arena and the id of the unpickled object.
#[derive(Debug, Clone)]
pub struct Pickle {
    values: Vec<Value>,
    root: Id,
}

impl Pickle {
    /// Parse a whole pickle (up to its `STOP`).
    pub fn parse(data: &[u8]) -> Result<Self> {
        Parser::new(data).run()
    }

    /// The unpickled object.
    pub fn root(&self) -> Id {
        self.root
    }

    pub fn get(&self, id: Id) -> &Value {
        &self.values[id]
    }

    pub fn as_str(&self, id: Id) -> Option<&str> {
        match self.get(id) {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self, id: Id) -> Option<i64> {
        match self.get(id) {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }

    pub fn as_bool(&self, id: Id) -> Option<bool> {
        match self.get(id) {
            Value::Bool(b) => Some(*b),
            Value::Int(i) => Some(*i != 0),
            _ => None,
        }
    }

    pub fn as_float(&self, id: Id) -> Option<f64> {
        match self.get(id) {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// The items of a tuple or list.
    pub fn as_seq(&self, id: Id) -> Option<&[Id]> {
        match self.get(id) {
            Value::Tuple(items) | Value::List(items) => Some(items),
            _ => None,
        }
    }

    /// `(module, name)` of a global reference.
    pub fn as_global(&self, id: Id) -> Option<(&str, &str)> {
        match self.get(id) {
            Value::Global { module, name } => Some((module, name)),
            _ => None,
        }
    }

    pub fn as_object(&self, id: Id) -> Option<&Object> {
        match self.get(id) {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    /// `(module, name)` of what an object was made by (its class for `NEWOBJ`, the function
    /// for `REDUCE`).
    pub fn callable_of(&self, id: Id) -> Option<(&str, &str)> {
        self.as_object(id).and_then(|o| self.as_global(o.callable))
    }

    /// The entries of a mapping: a plain dict, or a recorded call of a dict type
    /// (`collections.OrderedDict()` followed by `SETITEMS`, as torch writes state dicts).
    pub fn as_dict(&self, id: Id) -> Option<&[(Id, Id)]> {
        match self.get(id) {
            Value::Dict(items) => Some(items),
            Value::Object(o) => match self.as_global(o.callable) {
                Some(("collections", "OrderedDict" | "defaultdict"))
                | Some(("builtins", "dict")) => Some(&o.items),
                _ => None,
            },
            _ => None,
        }
    }

    /// The value stored under string key `key` in a mapping.
    pub fn dict_get(&self, id: Id, key: &str) -> Option<Id> {
        self.as_dict(id)?
            .iter()
            .find(|(k, _)| self.as_str(*k) == Some(key))
            .map(|(_, v)| *v)
    }

    /// The members of a set: `EMPTY_SET`/`ADDITEMS`, `FROZENSET`, or protocol 2's
    /// `builtins.set([...])` call.
    pub fn as_set(&self, id: Id) -> Option<Vec<Id>> {
        match self.get(id) {
            Value::Set(items) | Value::FrozenSet(items) => Some(items.clone()),
            Value::Object(o) => match self.as_global(o.callable) {
                Some(("builtins", "set" | "frozenset")) => {
                    let args = self.as_seq(o.args)?;
                    match args.first() {
                        Some(&first) => self.as_seq(first).map(<[Id]>::to_vec),
                        None => Some(Vec::new()),
                    }
                }
                _ => None,
            },
            _ => None,
        }
    }

    /// A short description of a value for error messages (`dict`, `torch.FloatStorage`, …).
    pub fn kind(&self, id: Id) -> String {
        match self.get(id) {
            Value::None => "None".into(),
            Value::Bool(_) => "bool".into(),
            Value::Int(_) | Value::BigInt(_) => "int".into(),
            Value::Float(_) => "float".into(),
            Value::Str(_) => "str".into(),
            Value::Bytes(_) => "bytes".into(),
            Value::List(_) => "list".into(),
            Value::Tuple(_) => "tuple".into(),
            Value::Dict(_) => "dict".into(),
            Value::Set(_) => "set".into(),
            Value::FrozenSet(_) => "frozenset".into(),
            Value::Global { module, name } => format!("global {module}.{name}"),
            Value::Object(o) => match self.as_global(o.callable) {
                Some((m, n)) => format!("{m}.{n}(..)"),
                None => "object".into(),
            },
            Value::PersistentId(_) => "persistent id".into(),
        }
    }
}

/// Opcode bytes, named as in CPython's `pickletools`.
mod op {
    pub const MARK: u8 = b'(';
    pub const STOP: u8 = b'.';
    pub const POP: u8 = b'0';
    pub const POP_MARK: u8 = b'1';
    pub const DUP: u8 = b'2';
    pub const FLOAT: u8 = b'F';
    pub const INT: u8 = b'I';
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const LONG: u8 = b'L';
    pub const BININT2: u8 = b'M';
    pub const NONE: u8 = b'N';
    pub const PERSID: u8 = b'P';
    pub const BINPERSID: u8 = b'Q';
    pub const REDUCE: u8 = b'R';
    pub const STRING: u8 = b'S';
    pub const BINSTRING: u8 = b'T';
    pub const SHORT_BINSTRING: u8 = b'U';
    pub const UNICODE: u8 = b'V';
    pub const BINUNICODE: u8 = b'X';
    pub const APPEND: u8 = b'a';
    pub const BUILD: u8 = b'b';
    pub const GLOBAL: u8 = b'c';
    pub const DICT: u8 = b'd';
    pub const EMPTY_DICT: u8 = b'}';
    pub const APPENDS: u8 = b'e';
    pub const GET: u8 = b'g';
    pub const BINGET: u8 = b'h';
    pub const INST: u8 = b'i';
    pub const LONG_BINGET: u8 = b'j';
    pub const LIST: u8 = b'l';
    pub const EMPTY_LIST: u8 = b']';
    pub const OBJ: u8 = b'o';
    pub const PUT: u8 = b'p';
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const SETITEM: u8 = b's';
    pub const TUPLE: u8 = b't';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const SETITEMS: u8 = b'u';
    pub const BINFLOAT: u8 = b'G';
    // protocol 2
    pub const PROTO: u8 = 0x80;
    pub const NEWOBJ: u8 = 0x81;
    pub const EXT1: u8 = 0x82;
    pub const EXT2: u8 = 0x83;
    pub const EXT4: u8 = 0x84;
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const LONG1: u8 = 0x8a;
    pub const LONG4: u8 = 0x8b;
    // protocol 3
    pub const BINBYTES: u8 = b'B';
    pub const SHORT_BINBYTES: u8 = b'C';
    // protocol 4
    pub const SHORT_BINUNICODE: u8 = 0x8c;
    pub const BINUNICODE8: u8 = 0x8d;
    pub const BINBYTES8: u8 = 0x8e;
    pub const EMPTY_SET: u8 = 0x8f;
    pub const ADDITEMS: u8 = 0x90;
    pub const FROZENSET: u8 = 0x91;
    pub const NEWOBJ_EX: u8 = 0x92;
    pub const STACK_GLOBAL: u8 = 0x93;
    pub const MEMOIZE: u8 = 0x94;
    pub const FRAME: u8 = 0x95;
    // protocol 5
    pub const BYTEARRAY8: u8 = 0x96;
    pub const NEXT_BUFFER: u8 = 0x97;
    pub const READONLY_BUFFER: u8 = 0x98;

    /// The opcode's `pickletools` name, for error messages.
    pub fn name(code: u8) -> &'static str {
        match code {
            STRING => "STRING",
            UNICODE => "UNICODE",
            EXT1 => "EXT1",
            EXT2 => "EXT2",
            EXT4 => "EXT4",
            NEXT_BUFFER => "NEXT_BUFFER",
            _ => "unknown opcode",
        }
    }
}

/// The unpickling machine: a stack of ids, the mark stack, and the memo.
struct Parser<'a> {
    data: &'a [u8],
    pos: usize,
    values: Vec<Value>,
    stack: Vec<Id>,
    /// Stack heights at each `MARK` (CPython's "metastack").
    marks: Vec<usize>,
    memo: HashMap<u64, Id>,
    /// Bytes copied out of existing values so far, see [`MAX_COPIED_BYTES`].
    copied: usize,
}

impl<'a> Parser<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            pos: 0,
            values: Vec::new(),
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            copied: 0,
        }
    }

    fn run(mut self) -> Result<Pickle> {
        loop {
            let at = self.pos;
            let code = self
                .take_u8()
                .context("pickle ends without a STOP opcode")?;
            if code == op::STOP {
                let root = self.pop(at)?;
                return Ok(Pickle {
                    values: self.values,
                    root,
                });
            }
            // Every error names the offending offset itself.
            self.step(code)?;
            self.check_budget(at)?;
        }
    }

    /// Refuse to grow past [`MAX_VALUES`]; checked after every opcode, each of which adds at
    /// most a handful of entries.
    fn check_budget(&self, at: usize) -> Result<()> {
        let largest = self
            .values
            .len()
            .max(self.stack.len())
            .max(self.memo.len())
            .max(self.marks.len());
        if largest > MAX_VALUES {
            bail!(
                "the pickle makes more than {MAX_VALUES} objects by offset {at}; a model \
                 checkpoint needs far fewer (a corrupt or hostile file?)"
            );
        }
        if self.copied > MAX_COPIED_BYTES {
            bail!(
                "the pickle copies more than {MAX_COPIED_BYTES} bytes of shared values by \
                 offset {at}; a model checkpoint needs far fewer (a corrupt or hostile file?)"
            );
        }
        Ok(())
    }

    /// One opcode, handed to the group that knows it; each group answers whether the opcode
    /// was one of its own. What no group knows is refused by name and offset.
    fn step(&mut self, code: u8) -> Result<()> {
        let at = self.pos - 1;
        let handled = self.stack_op(code, at)?
            || self.number(code, at)?
            || self.text_or_bytes(code, at)?
            || self.container(code, at)?
            || self.memo_op(code, at)?
            || self.call_op(code, at)?;
        if handled {
            return Ok(());
        }
        match code {
            op::STRING | op::UNICODE | op::EXT1 | op::EXT2 | op::EXT4 | op::NEXT_BUFFER => {
                bail!(
                    "unsupported pickle opcode {} (0x{code:02x}) at offset {at}",
                    op::name(code)
                )
            }
            _ => bail!(
                "unknown pickle opcode 0x{code:02x} at offset {at} (not a pickle, or a corrupt one)"
            ),
        }
    }

    /// Protocol and framing, marks and the plain stack moves.
    fn stack_op(&mut self, code: u8, at: usize) -> Result<bool> {
        match code {
            op::PROTO => {
                let v = self.take_u8()?;
                if v > 5 {
                    bail!("pickle protocol {v} is newer than 5");
                }
            }
            // Frames only group opcodes for buffered reading; the data is all in memory.
            op::FRAME => {
                self.take(8)?;
            }
            op::MARK => self.marks.push(self.stack.len()),
            op::POP => {
                if self.marks.last() == Some(&self.stack.len()) {
                    // CPython: POP right after MARK discards the mark.
                    self.marks.pop();
                } else {
                    self.pop(at)?;
                }
            }
            op::POP_MARK => {
                self.pop_mark(at)?;
            }
            op::DUP => {
                let top = *self
                    .stack
                    .last()
                    .with_context(|| format!("DUP on an empty stack at offset {at}"))?;
                self.stack.push(top);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// `None`, booleans, integers and floats.
    fn number(&mut self, code: u8, at: usize) -> Result<bool> {
        match code {
            op::NONE => self.push(Value::None),
            op::NEWTRUE => self.push(Value::Bool(true)),
            op::NEWFALSE => self.push(Value::Bool(false)),
            op::BININT => {
                let b = self.take_array::<4>()?;
                self.push(Value::Int(i32::from_le_bytes(b) as i64));
            }
            op::BININT1 => {
                let b = self.take_u8()?;
                self.push(Value::Int(b as i64));
            }
            op::BININT2 => {
                let b = self.take_array::<2>()?;
                self.push(Value::Int(u16::from_le_bytes(b) as i64));
            }
            op::LONG1 => {
                let n = self.take_u8()? as usize;
                let bytes = self.take(n)?.to_vec();
                self.push(long_value(bytes));
            }
            op::LONG4 => {
                let n = self.take_len4(at)?;
                let bytes = self.take(n)?.to_vec();
                self.push(long_value(bytes));
            }
            op::INT => {
                let line = self.take_line_str()?;
                // Protocol 0 writes booleans as INT 01 / 00.
                let v = match line.as_str() {
                    "01" => Value::Bool(true),
                    "00" => Value::Bool(false),
                    s => Value::Int(s.parse().with_context(|| format!("bad INT {s:?}"))?),
                };
                self.push(v);
            }
            op::LONG => {
                let line = self.take_line_str()?;
                let digits = line.trim_end_matches('L');
                let v: i64 = digits
                    .parse()
                    .with_context(|| format!("LONG {digits:?} does not fit 64 bits"))?;
                self.push(Value::Int(v));
            }
            op::BINFLOAT => {
                let b = self.take_array::<8>()?;
                self.push(Value::Float(f64::from_be_bytes(b)));
            }
            op::FLOAT => {
                let line = self.take_line_str()?;
                self.push(Value::Float(
                    line.parse()
                        .with_context(|| format!("bad FLOAT {line:?}"))?,
                ));
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Text and byte strings (`READONLY_BUFFER` only flags the bytes already pushed).
    fn text_or_bytes(&mut self, code: u8, at: usize) -> Result<bool> {
        match code {
            op::BINUNICODE => {
                let n = self.take_ulen4()?;
                self.push_utf8(n)?;
            }
            op::SHORT_BINUNICODE => {
                let n = self.take_u8()? as usize;
                self.push_utf8(n)?;
            }
            op::BINUNICODE8 => {
                let n = self.take_len8(at)?;
                self.push_utf8(n)?;
            }
            // Python 2 `str`: torch never writes these, but they are bytes of text; keep them
            // as strings when they decode, as Python 3's default `encoding="ASCII"` would.
            op::BINSTRING | op::SHORT_BINSTRING => {
                let n = if code == op::BINSTRING {
                    self.take_len4(at)?
                } else {
                    self.take_u8()? as usize
                };
                let bytes = self.take(n)?;
                let v = match std::str::from_utf8(bytes) {
                    Ok(s) => Value::Str(s.to_string()),
                    Err(_) => Value::Bytes(bytes.to_vec()),
                };
                self.push(v);
            }
            op::BINBYTES => {
                let n = self.take_ulen4()?;
                let b = self.take(n)?.to_vec();
                self.push(Value::Bytes(b));
            }
            op::SHORT_BINBYTES => {
                let n = self.take_u8()? as usize;
                let b = self.take(n)?.to_vec();
                self.push(Value::Bytes(b));
            }
            op::BINBYTES8 | op::BYTEARRAY8 => {
                let n = self.take_len8(at)?;
                let b = self.take(n)?.to_vec();
                self.push(Value::Bytes(b));
            }
            // A protocol-5 buffer flag: the value is already on the stack as bytes.
            op::READONLY_BUFFER => {
                self.top(at)?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Building tuples, lists, dicts and sets, and filling them (or an object's list and
    /// dict items) after they were memoised.
    fn container(&mut self, code: u8, at: usize) -> Result<bool> {
        match code {
            op::EMPTY_TUPLE => self.push(Value::Tuple(Vec::new())),
            op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                let n = (code - op::TUPLE1 + 1) as usize;
                if self.stack.len() < n + self.marks.last().copied().unwrap_or(0) {
                    bail!("TUPLE{n} needs {n} values on the stack at offset {at}");
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.push(Value::Tuple(items));
            }
            op::TUPLE => {
                let items = self.pop_mark(at)?;
                self.push(Value::Tuple(items));
            }
            op::EMPTY_LIST => self.push(Value::List(Vec::new())),
            op::LIST => {
                let items = self.pop_mark(at)?;
                self.push(Value::List(items));
            }
            op::EMPTY_DICT => self.push(Value::Dict(Vec::new())),
            op::DICT => {
                let items = self.pop_mark(at)?;
                let pairs = pairs(items, at)?;
                self.push(Value::Dict(pairs));
            }
            op::EMPTY_SET => self.push(Value::Set(Vec::new())),
            op::FROZENSET => {
                let items = self.pop_mark(at)?;
                self.push(Value::FrozenSet(items));
            }
            op::APPEND => {
                let v = self.pop(at)?;
                let target = self.top(at)?;
                self.append(target, vec![v], at)?;
            }
            op::APPENDS => {
                let items = self.pop_mark(at)?;
                let target = self.top(at)?;
                self.append(target, items, at)?;
            }
            op::SETITEM => {
                let v = self.pop(at)?;
                let k = self.pop(at)?;
                let target = self.top(at)?;
                self.set_items(target, vec![(k, v)], at)?;
            }
            op::SETITEMS => {
                let items = self.pop_mark(at)?;
                let target = self.top(at)?;
                self.set_items(target, pairs(items, at)?, at)?;
            }
            op::ADDITEMS => {
                let items = self.pop_mark(at)?;
                let target = self.top(at)?;
                match &mut self.values[target] {
                    Value::Set(set) => set.extend(items),
                    _ => bail!("ADDITEMS on a {} at offset {at}", self.kind_at(target)),
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The memo: `PUT`s name the top of the stack, `GET`s push it again.
    fn memo_op(&mut self, code: u8, at: usize) -> Result<bool> {
        match code {
            op::BINPUT => {
                let k = self.take_u8()? as u64;
                self.put(k, at)?;
            }
            op::LONG_BINPUT => {
                let k = u32::from_le_bytes(self.take_array::<4>()?) as u64;
                self.put(k, at)?;
            }
            op::PUT => {
                let line = self.take_line_str()?;
                let k = line
                    .parse()
                    .with_context(|| format!("bad PUT index {line:?}"))?;
                self.put(k, at)?;
            }
            op::MEMOIZE => {
                let k = self.memo.len() as u64;
                self.put(k, at)?;
            }
            op::BINGET => {
                let k = self.take_u8()? as u64;
                self.get(k, at)?;
            }
            op::LONG_BINGET => {
                let k = u32::from_le_bytes(self.take_array::<4>()?) as u64;
                self.get(k, at)?;
            }
            op::GET => {
                let line = self.take_line_str()?;
                let k = line
                    .parse()
                    .with_context(|| format!("bad GET index {line:?}"))?;
                self.get(k, at)?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Classes, calls and objects, recorded rather than run, and persistent ids (torch's
    /// storages).
    fn call_op(&mut self, code: u8, at: usize) -> Result<bool> {
        match code {
            op::GLOBAL => {
                let module = self.take_line_str()?;
                let name = self.take_line_str()?;
                self.push_global(module, name);
            }
            op::STACK_GLOBAL => {
                let name_id = self.pop(at)?;
                let module_id = self.pop(at)?;
                let (Value::Str(module), Value::Str(name)) =
                    (&self.values[module_id], &self.values[name_id])
                else {
                    bail!("STACK_GLOBAL needs two strings at offset {at}");
                };
                let (module, name) = (module.clone(), name.clone());
                self.copied += module.len() + name.len();
                self.push_global(module, name);
            }
            op::REDUCE => {
                let args = self.pop(at)?;
                let callable = self.pop(at)?;
                let obj = self.reduce(callable, args);
                self.push(Value::Object(Box::new(obj)));
            }
            op::NEWOBJ => {
                let args = self.pop(at)?;
                let callable = self.pop(at)?;
                self.push(Value::Object(Box::new(Object {
                    callable,
                    args,
                    new_obj: true,
                    ..Default::default()
                })));
            }
            op::NEWOBJ_EX => {
                let kwargs = self.pop(at)?;
                let args = self.pop(at)?;
                let callable = self.pop(at)?;
                self.push(Value::Object(Box::new(Object {
                    callable,
                    args,
                    kwargs: Some(kwargs),
                    new_obj: true,
                    ..Default::default()
                })));
            }
            op::INST => {
                let module = self.take_line_str()?;
                let name = self.take_line_str()?;
                let items = self.pop_mark(at)?;
                let callable = self.alloc(global(module, name));
                let args = self.alloc(Value::Tuple(items));
                self.push(Value::Object(Box::new(Object {
                    callable,
                    args,
                    ..Default::default()
                })));
            }
            op::OBJ => {
                let mut items = self.pop_mark(at)?;
                if items.is_empty() {
                    bail!("OBJ without a class at offset {at}");
                }
                let callable = items.remove(0);
                let args = self.alloc(Value::Tuple(items));
                self.push(Value::Object(Box::new(Object {
                    callable,
                    args,
                    ..Default::default()
                })));
            }
            op::BUILD => {
                let state = self.pop(at)?;
                let target = self.top(at)?;
                match &mut self.values[target] {
                    Value::Object(o) => o.state = Some(state),
                    _ => bail!("BUILD on a {} at offset {at}", self.kind_at(target)),
                }
            }
            op::BINPERSID => {
                let pid = self.pop(at)?;
                self.push(Value::PersistentId(pid));
            }
            op::PERSID => {
                let line = self.take_line_str()?;
                let pid = self.alloc(Value::Str(line));
                self.push(Value::PersistentId(pid));
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// `callable(*args)`. `copyreg.__newobj__(cls, *args)` and `copyreg.__newobj_ex__(cls,
    /// args, kwargs)` (protocol < 4 spellings of `NEWOBJ` / `NEWOBJ_EX`) are recorded as the
    /// `NEWOBJ` they stand for, so objects look the same whatever the protocol.
    fn reduce(&mut self, callable: Id, args: Id) -> Object {
        let plain = Object {
            callable,
            args,
            ..Default::default()
        };
        let Value::Global { module, name } = &self.values[callable] else {
            return plain;
        };
        if module != "copyreg" {
            return plain;
        }
        let Value::Tuple(items) = &self.values[args] else {
            return plain;
        };
        match (name.as_str(), items.as_slice()) {
            ("__newobj__", [cls, rest @ ..]) => {
                let (cls, rest) = (*cls, rest.to_vec());
                self.copied += rest.len() * std::mem::size_of::<Id>();
                let args = self.alloc(Value::Tuple(rest));
                Object {
                    callable: cls,
                    args,
                    new_obj: true,
                    ..Default::default()
                }
            }
            ("__newobj_ex__", &[cls, args, kwargs]) => Object {
                callable: cls,
                args,
                kwargs: Some(kwargs),
                new_obj: true,
                ..Default::default()
            },
            _ => plain,
        }
    }

    fn alloc(&mut self, v: Value) -> Id {
        self.values.push(v);
        self.values.len() - 1
    }

    fn push(&mut self, v: Value) {
        let id = self.alloc(v);
        self.stack.push(id);
    }

    fn push_global(&mut self, module: String, name: String) {
        self.push(global(module, name));
    }

    fn push_utf8(&mut self, n: usize) -> Result<()> {
        let bytes = self.take(n)?;
        // Python writes lone surrogates with `surrogatepass`; keep going with a lossy string.
        let s = String::from_utf8_lossy(bytes).into_owned();
        self.push(Value::Str(s));
        Ok(())
    }

    /// Pop one value; a pop below the last mark is an error, as in CPython.
    fn pop(&mut self, at: usize) -> Result<Id> {
        if self.stack.len() <= self.marks.last().copied().unwrap_or(0) {
            bail!("stack underflow at offset {at}");
        }
        Ok(self.stack.pop().expect("checked above"))
    }

    fn top(&self, at: usize) -> Result<Id> {
        if self.stack.len() <= self.marks.last().copied().unwrap_or(0) {
            bail!("stack underflow at offset {at}");
        }
        Ok(*self.stack.last().expect("checked above"))
    }

    /// Pop everything above the last mark, and the mark.
    fn pop_mark(&mut self, at: usize) -> Result<Vec<Id>> {
        let mark = self
            .marks
            .pop()
            .with_context(|| format!("no MARK before offset {at}"))?;
        Ok(self.stack.split_off(mark))
    }

    fn put(&mut self, key: u64, at: usize) -> Result<()> {
        let top = self.top(at)?;
        self.memo.insert(key, top);
        Ok(())
    }

    fn get(&mut self, key: u64, at: usize) -> Result<()> {
        let id = *self
            .memo
            .get(&key)
            .with_context(|| format!("memo key {key} not defined at offset {at}"))?;
        self.stack.push(id);
        Ok(())
    }

    fn append(&mut self, target: Id, items: Vec<Id>, at: usize) -> Result<()> {
        match &mut self.values[target] {
            Value::List(list) => list.extend(items),
            Value::Object(o) => o.appended.extend(items),
            _ => bail!("APPEND to a {} at offset {at}", self.kind_at(target)),
        }
        Ok(())
    }

    fn set_items(&mut self, target: Id, items: Vec<(Id, Id)>, at: usize) -> Result<()> {
        match &mut self.values[target] {
            Value::Dict(dict) => dict.extend(items),
            Value::Object(o) => o.items.extend(items),
            _ => bail!("SETITEM on a {} at offset {at}", self.kind_at(target)),
        }
        Ok(())
    }

    fn kind_at(&self, id: Id) -> &'static str {
        match &self.values[id] {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
            Value::Dict(_) => "dict",
            Value::Set(_) => "set",
            Value::FrozenSet(_) => "frozenset",
            Value::Global { .. } => "global",
            Value::Object(_) => "object",
            Value::PersistentId(_) => "persistent id",
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .with_context(|| {
                format!(
                    "pickle truncated: {n} bytes wanted at offset {} of {}",
                    self.pos,
                    self.data.len()
                )
            })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn take_u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    /// An unsigned 4-byte length (`BINUNICODE`, `BINBYTES`: `uint4` in `pickletools`).
    fn take_ulen4(&mut self) -> Result<usize> {
        Ok(u32::from_le_bytes(self.take_array::<4>()?) as usize)
    }

    /// A signed 4-byte length (`BINSTRING`, `LONG4`: `int4`; negative is an error, as in
    /// CPython).
    fn take_len4(&mut self, at: usize) -> Result<usize> {
        let n = i32::from_le_bytes(self.take_array::<4>()?);
        usize::try_from(n).map_err(|_| anyhow::anyhow!("negative length {n} at offset {at}"))
    }

    fn take_len8(&mut self, at: usize) -> Result<usize> {
        let n = u64::from_le_bytes(self.take_array::<8>()?);
        usize::try_from(n).map_err(|_| anyhow::anyhow!("length {n} too large at offset {at}"))
    }

    /// A newline-terminated text argument (protocol 0 opcodes and `GLOBAL`).
    fn take_line_str(&mut self) -> Result<String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .context("pickle truncated inside a text argument")?;
        let line = std::str::from_utf8(&rest[..n])
            .context("text argument is not UTF-8")?
            .to_string();
        self.pos += n + 1;
        Ok(line)
    }
}

fn global(module: String, name: String) -> Value {
    // Protocol <3 pickles name Python 3 builtins by their Python 2 module.
    let module = match module.as_str() {
        "__builtin__" => "builtins".to_string(),
        "copy_reg" => "copyreg".to_string(),
        _ => module,
    };
    Value::Global { module, name }
}

/// A `LONG1`/`LONG4` value: little-endian two's complement of any width.
fn long_value(bytes: Vec<u8>) -> Value {
    if bytes.is_empty() {
        return Value::Int(0);
    }
    if bytes.len() <= 8 {
        let fill = if bytes[bytes.len() - 1] & 0x80 != 0 {
            0xff
        } else {
            0
        };
        let mut buf = [fill; 8];
        buf[..bytes.len()].copy_from_slice(&bytes);
        return Value::Int(i64::from_le_bytes(buf));
    }
    Value::BigInt(bytes)
}

fn pairs(items: Vec<Id>, at: usize) -> Result<Vec<(Id, Id)>> {
    if !items.len().is_multiple_of(2) {
        bail!(
            "odd number of items ({}) for a dict at offset {at}",
            items.len()
        );
    }
    Ok(items.chunks_exact(2).map(|kv| (kv[0], kv[1])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `pickle.dumps(obj, protocol)` of, in Python:
    /// ```python
    /// class Kw:  # pickled with NEWOBJ_EX under protocol 4
    ///     def __init__(self, a): self.a = a
    ///     def __getnewargs_ex__(self): return ((1,), {"k": 2})
    /// shared = [1, 2]
    /// obj = {"ints": (0, -1, 255, 65535, -2**31, 2**40, -2**63, 2**70), "float": 1.5,
    ///        "s": "héllo", "b": b"\x00\x01", "none": None, "t": True, "f": False,
    ///        "set": {3}, "fs": frozenset([4]), "od": collections.OrderedDict([("x", 1)]),
    ///        "ns": argparse.Namespace(encoder_layers=2), "shared": (shared, shared), "kw": Kw(5)}
    /// ```
    const PROTO2: &str = "80027d7100285804000000696e74737101284b004affffffff4bff4dffff4a000000808a060000000000018a0800000000000000808a090000000000000000407471025805000000666c6f61747103473ff80000000000005801000000737104580600000068c3a96c6c6f71055801000000627106635f636f646563730a656e636f64650a710758020000000001710858060000006c6174696e31710986710a52710b58040000006e6f6e65710c4e580100000074710d88580100000066710e895803000000736574710f635f5f6275696c74696e5f5f0a7365740a71105d71114b0361857112527113580200000066737114635f5f6275696c74696e5f5f0a66726f7a656e7365740a71155d71164b046185711752711858020000006f64711963636f6c6c656374696f6e730a4f726465726564446963740a711a2952711b580100000078711c4b017358020000006e73711d6361726770617273650a4e616d6573706163650a711e2981711f7d7120580e000000656e636f6465725f6c617965727371214b027362580600000073686172656471225d7123284b014b0265682386712458020000006b7771256366756e63746f6f6c730a7061727469616c0a7126635f5f6275696c74696e5f5f0a676574617474720a7127635f5f6275696c74696e5f5f0a6f626a6563740a712858070000005f5f6e65775f5f712986712a52712b85712c52712d28682b635f5f6d61696e5f5f0a4b770a712e4b0186712f7d713058010000006b71314b02734e74713262295271337d713458010000006171354b057362752e";
    const PROTO4: &str = "80049536010000000000007d94288c04696e747394284b004affffffff4bff4dffff4a000000808a060000000000018a0800000000000000808a0900000000000000004074948c05666c6f617494473ff80000000000008c0173948c0668c3a96c6c6f948c01629443020001948c046e6f6e65944e8c017494888c016694898c03736574948f94284b03908c02667394284b0491948c026f64948c0b636f6c6c656374696f6e73948c0b4f726465726564446963749493942952948c0178944b01738c026e73948c086172677061727365948c094e616d6573706163659493942981947d948c0e656e636f6465725f6c6179657273944b0273628c06736861726564945d94284b014b0265681d86948c026b77948c085f5f6d61696e5f5f948c024b779493944b0185947d948c016b944b027392947d948c0161944b057362752e";

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn check_sample(pk: &Pickle, proto: u32) {
        let root = pk.root();
        let get = |k: &str| pk.dict_get(root, k).unwrap_or_else(|| panic!("key {k}"));
        let ints: Vec<&Value> = pk
            .as_seq(get("ints"))
            .unwrap()
            .iter()
            .map(|&i| pk.get(i))
            .collect();
        assert_eq!(
            ints[..7],
            [0i64, -1, 255, 65535, -(1 << 31), 1 << 40, i64::MIN]
                .map(Value::Int)
                .iter()
                .collect::<Vec<_>>()[..]
        );
        let mut big = vec![0u8; 9];
        big[8] = 0x40; // 2**70, little-endian
        assert_eq!(ints[7], &Value::BigInt(big));
        assert_eq!(pk.as_float(get("float")), Some(1.5));
        assert_eq!(pk.as_str(get("s")), Some("héllo"));
        // Protocol 2 has no bytes opcode: bytes are `_codecs.encode(str, "latin1")`, recorded.
        if proto >= 3 {
            assert_eq!(pk.get(get("b")), &Value::Bytes(vec![0, 1]));
        } else {
            assert_eq!(pk.callable_of(get("b")), Some(("_codecs", "encode")));
        }
        assert_eq!(pk.get(get("none")), &Value::None);
        assert_eq!(pk.as_bool(get("t")), Some(true));
        assert_eq!(pk.as_bool(get("f")), Some(false));
        let set = pk.as_set(get("set")).unwrap();
        assert_eq!(
            set.iter()
                .map(|&i| pk.as_int(i).unwrap())
                .collect::<Vec<_>>(),
            [3]
        );
        let fs = pk.as_set(get("fs")).unwrap();
        assert_eq!(
            fs.iter()
                .map(|&i| pk.as_int(i).unwrap())
                .collect::<Vec<_>>(),
            [4]
        );
        let od = get("od");
        assert_eq!(pk.dict_get(od, "x").and_then(|v| pk.as_int(v)), Some(1));
        let ns = pk.as_object(get("ns")).unwrap();
        assert_eq!(pk.as_global(ns.callable), Some(("argparse", "Namespace")));
        assert!(ns.new_obj);
        assert_eq!(
            pk.dict_get(ns.state.unwrap(), "encoder_layers")
                .and_then(|v| pk.as_int(v)),
            Some(2)
        );
        // The memo makes both tuple items the same list.
        let shared = pk.as_seq(get("shared")).unwrap();
        assert_eq!(shared[0], shared[1]);
        assert_eq!(pk.as_seq(shared[0]).unwrap().len(), 2);
        let kw = pk.as_object(get("kw")).unwrap();
        assert_eq!(
            pk.dict_get(kw.state.unwrap(), "a")
                .and_then(|v| pk.as_int(v)),
            Some(5)
        );
        // Protocol 2 spells `__getnewargs_ex__` as a `functools.partial(object.__new__, ..)`
        // call, recorded as such; protocol 4 has NEWOBJ_EX.
        if proto >= 4 {
            assert!(kw.new_obj);
            assert_eq!(pk.as_global(kw.callable), Some(("__main__", "Kw")));
            assert_eq!(
                kw.kwargs
                    .and_then(|k| pk.dict_get(k, "k"))
                    .and_then(|v| pk.as_int(v)),
                Some(2)
            );
        }
    }

    #[test]
    fn protocol_2() {
        check_sample(&Pickle::parse(&unhex(PROTO2)).unwrap(), 2);
    }

    #[test]
    fn protocol_4() {
        check_sample(&Pickle::parse(&unhex(PROTO4)).unwrap(), 4);
    }

    #[test]
    fn unsupported_opcode_is_named_with_its_offset() {
        let err = Pickle::parse(b"\x80\x02\x82\x01.").unwrap_err().to_string();
        assert!(err.contains("EXT1") && err.contains("offset 2"), "{err}");
    }

    #[test]
    fn binunicode_length_is_unsigned() {
        // 0xffffffff is 4 GiB wanted from an 11-byte pickle, not -1.
        let err = Pickle::parse(b"\x80\x02X\xff\xff\xff\xffabc.")
            .unwrap_err()
            .to_string();
        assert!(err.contains("4294967295 bytes wanted at offset 7"), "{err}");
        let err = Pickle::parse(b"\x80\x02B\x00\x00\x00\x80abc.")
            .unwrap_err()
            .to_string();
        assert!(err.contains("2147483648 bytes wanted"), "{err}");
        // BINSTRING's length is signed in the protocol: negative is refused as such.
        let err = Pickle::parse(b"\x80\x02T\xff\xff\xff\xffabc.")
            .unwrap_err()
            .to_string();
        assert!(err.contains("negative length -1"), "{err}");
    }

    #[test]
    fn object_budget_bounds_memory() {
        // Each EMPTY_DICT makes a value; one past the budget is refused.
        let mut data = b"\x80\x02".to_vec();
        data.resize(MAX_VALUES + 3, b'}');
        data.push(b'.');
        let err = Pickle::parse(&data).unwrap_err().to_string();
        assert!(
            err.contains(&format!("more than {MAX_VALUES} objects")),
            "{err}"
        );
        // DUP makes no value but a stack slot: bounded too.
        let mut data = b"\x80\x02N".to_vec();
        data.resize(MAX_VALUES + 4, b'2');
        data.push(b'.');
        let err = Pickle::parse(&data).unwrap_err().to_string();
        assert!(err.contains("objects"), "{err}");
    }

    #[test]
    fn copies_of_shared_strings_are_bounded() {
        // One 1 MiB string, memoised, then STACK_GLOBAL(it, it) over and over: 6 bytes of
        // pickle per 2 MiB copied.
        let mut data = b"\x80\x04X\x00\x00\x10\x00".to_vec();
        data.extend(std::iter::repeat_n(b'a', 1 << 20));
        data.extend_from_slice(b"q\x00");
        for _ in 0..100 {
            data.extend_from_slice(b"h\x00h\x00\x930");
        }
        data.push(b'.');
        let err = Pickle::parse(&data).unwrap_err().to_string();
        assert!(err.contains("copies more than"), "{err}");
    }

    #[test]
    fn shared_references_are_one_value() {
        // d0 = {}; d_k = {"a": d_{k-1}, "b": d_{k-1}}: 40 levels make 41 dicts, not 2^40.
        let mut data = b"\x80\x02}q\x00".to_vec();
        for k in 1..=40u8 {
            data.extend_from_slice(b"}(X\x01\x00\x00\x00ah");
            data.push(k - 1);
            data.extend_from_slice(b"X\x01\x00\x00\x00bh");
            data.push(k - 1);
            data.extend_from_slice(b"uq");
            data.push(k);
        }
        data.push(b'.');
        let pk = Pickle::parse(&data).unwrap();
        let root = pk.root();
        assert_eq!(pk.dict_get(root, "a"), pk.dict_get(root, "b"));
        let dicts = (0..pk.values.len())
            .filter(|&i| matches!(pk.get(i), Value::Dict(_)))
            .count();
        assert_eq!(dicts, 41);
    }

    #[test]
    fn garbage_is_not_a_pickle() {
        let err = Pickle::parse(b"\xff\xfe junk").unwrap_err().to_string();
        assert!(
            err.contains("unknown pickle opcode 0xff at offset 0"),
            "{err}"
        );
        let err = Pickle::parse(b"\x80\x02K").unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
        let err = Pickle::parse(b"\x80\x02N").unwrap_err().to_string();
        assert!(err.contains("STOP"), "{err}");
    }
}
