//! What a Rails console prints for `Setting.get('sipgate_config')`, read back
//! as JSON: Ruby's `Hash#inspect` (`{"inbound"=>{"block_caller_ids"=>[…]}}`,
//! `nil`, symbol keys, Ruby 3.4's `"key" => value`), and a Ruby or JSON string
//! literal that holds the JSON (what `p config.to_json` prints). Only literals
//! are read; nothing is evaluated.

use serde_json::{Map, Number, Value};

use super::clip;

/// The console's text as a JSON value. `=> ` (irb's result marker) in front
/// is skipped. A string literal is unwrapped once and its content read as
/// JSON or as a Ruby hash.
pub fn read_console(text: &str) -> Result<Value, String> {
    let text = strip_result_marker(text);
    if text.starts_with('"') {
        let mut reader = Reader::new(text);
        let inner = reader.string()?;
        reader.end()?;
        let inner = strip_result_marker(&inner).to_string();
        return read_document(&inner);
    }
    read_document(text)
}

fn strip_result_marker(text: &str) -> &str {
    let text = text.trim();
    text.strip_prefix("=>").map_or(text, str::trim_start)
}

/// JSON first; Ruby's inspect form when that fails. The JSON error is the
/// one reported unless the text looks like Ruby (`=>` or `nil`).
fn read_document(text: &str) -> Result<Value, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(v) => Ok(v),
        Err(json_error) => {
            let mut reader = Reader::new(text);
            match reader.value().and_then(|v| reader.end().map(|()| v)) {
                Ok(v) => Ok(v),
                Err(ruby_error) if text.contains("=>") || text.contains("nil") => {
                    Err(format!("not valid Ruby hash syntax: {ruby_error}"))
                }
                Err(_) => Err(format!("not valid JSON: {json_error}")),
            }
        }
    }
}

/// Deepest nesting accepted, so a hostile input cannot exhaust the stack.
const MAX_DEPTH: usize = 64;

struct Reader<'a> {
    text: &'a str,
    pos: usize,
    depth: usize,
}

impl<'a> Reader<'a> {
    fn new(text: &'a str) -> Self {
        Reader {
            text,
            pos: 0,
            depth: 0,
        }
    }

    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    fn error(&self, what: &str) -> String {
        let near = clip(self.rest(), 20);
        format!("{what} at character {} (near '{near}')", self.pos + 1)
    }

    fn eat(&mut self, s: &str) -> bool {
        if self.rest().starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    fn end(&mut self) -> Result<(), String> {
        self.skip_ws();
        if self.pos == self.text.len() {
            Ok(())
        } else {
            Err(self.error("unexpected text after the value"))
        }
    }

    fn value(&mut self) -> Result<Value, String> {
        self.skip_ws();
        match self.peek() {
            Some('{') => self.nested(Self::hash),
            Some('[') => self.nested(Self::array),
            Some('"') => self.string().map(Value::String),
            Some(':') => self.symbol().map(Value::String),
            Some(c) if c == '-' || c.is_ascii_digit() => self.number(),
            Some(_) if self.eat("nil") => Ok(Value::Null),
            Some(_) if self.eat("true") => Ok(Value::Bool(true)),
            Some(_) if self.eat("false") => Ok(Value::Bool(false)),
            Some(_) => Err(self.error("expected a value")),
            None => Err(self.error("unexpected end of input")),
        }
    }

    fn nested(&mut self, read: fn(&mut Self) -> Result<Value, String>) -> Result<Value, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        let v = read(self);
        self.depth -= 1;
        v
    }

    fn hash(&mut self) -> Result<Value, String> {
        self.bump();
        let mut map = Map::new();
        loop {
            self.skip_ws();
            if self.eat("}") {
                return Ok(Value::Object(map));
            }
            let key = self.key()?;
            let value = self.value()?;
            map.insert(key, value);
            self.skip_ws();
            if self.eat(",") {
                continue;
            }
            if self.eat("}") {
                return Ok(Value::Object(map));
            }
            return Err(self.error("expected ',' or '}'"));
        }
    }

    /// `"key" =>`, `"key":`, `:key =>`, `key:` or `1 =>`.
    fn key(&mut self) -> Result<String, String> {
        let key = match self.peek() {
            Some('"') => {
                let key = self.string()?;
                if self.eat(":") {
                    return Ok(key);
                }
                key
            }
            Some(':') => self.symbol()?,
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let start = self.pos;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    self.bump();
                }
                let key = self.text[start..self.pos].to_string();
                if !self.eat(":") {
                    return Err(self.error("expected ':' after a bare key"));
                }
                return Ok(key);
            }
            Some(_) => match self.value()? {
                Value::String(s) => s,
                other => other.to_string(),
            },
            None => return Err(self.error("unexpected end of input")),
        };
        self.skip_ws();
        if self.eat("=>") {
            Ok(key)
        } else {
            Err(self.error("expected '=>'"))
        }
    }

    fn array(&mut self) -> Result<Value, String> {
        self.bump();
        let mut items = Vec::new();
        loop {
            self.skip_ws();
            if self.eat("]") {
                return Ok(Value::Array(items));
            }
            items.push(self.value()?);
            self.skip_ws();
            if self.eat(",") {
                continue;
            }
            if self.eat("]") {
                return Ok(Value::Array(items));
            }
            return Err(self.error("expected ',' or ']'"));
        }
    }

    fn symbol(&mut self) -> Result<String, String> {
        self.bump();
        if self.peek() == Some('"') {
            return self.string();
        }
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '?' | '!'))
        {
            self.bump();
        }
        if start == self.pos {
            return Err(self.error("expected a symbol name after ':'"));
        }
        Ok(self.text[start..self.pos].to_string())
    }

    fn number(&mut self) -> Result<Value, String> {
        let start = self.pos;
        self.eat("-");
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-' | '_'))
        {
            self.bump();
        }
        let literal: String = self.text[start..self.pos]
            .chars()
            .filter(|c| *c != '_')
            .collect();
        if let Ok(n) = literal.parse::<i64>() {
            return Ok(Value::Number(n.into()));
        }
        if let Ok(n) = literal.parse::<u64>() {
            return Ok(Value::Number(n.into()));
        }
        literal
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| self.error("not a number"))
    }

    /// A double-quoted Ruby (or JSON) string literal, escapes decoded.
    fn string(&mut self) -> Result<String, String> {
        self.bump();
        let mut bytes: Vec<u8> = Vec::new();
        loop {
            let Some(c) = self.bump() else {
                return Err(self.error("unterminated string"));
            };
            match c {
                '"' => break,
                '\\' => {
                    let Some(e) = self.bump() else {
                        return Err(self.error("unterminated string"));
                    };
                    let decoded = match e {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        'e' => '\u{1b}',
                        'a' => '\u{7}',
                        'b' => '\u{8}',
                        'f' => '\u{c}',
                        'v' => '\u{b}',
                        's' => ' ',
                        '0' => '\0',
                        'u' => self.unicode_escape()?,
                        'x' => {
                            let hex = self.take_hex(2)?;
                            let byte = u8::from_str_radix(&hex, 16)
                                .map_err(|_| self.error("bad \\x escape"))?;
                            bytes.push(byte);
                            continue;
                        }
                        other => other,
                    };
                    let mut buf = [0u8; 4];
                    bytes.extend_from_slice(decoded.encode_utf8(&mut buf).as_bytes());
                }
                other => {
                    let mut buf = [0u8; 4];
                    bytes.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        String::from_utf8(bytes).map_err(|_| self.error("string is not valid UTF-8"))
    }

    fn take_hex(&mut self, max: usize) -> Result<String, String> {
        let start = self.pos;
        while self.pos - start < max && self.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
            self.bump();
        }
        if start == self.pos {
            return Err(self.error("expected hex digits"));
        }
        Ok(self.text[start..self.pos].to_string())
    }

    /// `\uXXXX` (with JSON's surrogate pairs) or Ruby's `\u{X…}`.
    fn unicode_escape(&mut self) -> Result<char, String> {
        let code = if self.eat("{") {
            let hex = self.take_hex(6)?;
            if !self.eat("}") {
                return Err(self.error("expected '}' after \\u{"));
            }
            u32::from_str_radix(&hex, 16).map_err(|_| self.error("bad \\u escape"))?
        } else {
            let hex = self.take_hex(4)?;
            let high = u32::from_str_radix(&hex, 16).map_err(|_| self.error("bad \\u escape"))?;
            if (0xD800..0xDC00).contains(&high) && self.eat("\\u") {
                let low = u32::from_str_radix(&self.take_hex(4)?, 16)
                    .map_err(|_| self.error("bad \\u escape"))?;
                0x10000 + ((high - 0xD800) << 10) + (low.wrapping_sub(0xDC00) & 0x3FF)
            } else {
                high
            }
        };
        char::from_u32(code).ok_or_else(|| self.error("\\u escape is not a character"))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_every_console_form() {
        let expected = json!({"inbound": {"block_caller_ids": [{"caller_id": "4930123", "note": null}]},
                              "outbound": {"routing_table": [], "default_caller_id": ""}});
        let forms = [
            // puts config.to_json
            r#"{"inbound":{"block_caller_ids":[{"caller_id":"4930123","note":null}]},"outbound":{"routing_table":[],"default_caller_id":""}}"#,
            // p config.to_json
            r#""{\"inbound\":{\"block_caller_ids\":[{\"caller_id\":\"4930123\",\"note\":null}]},\"outbound\":{\"routing_table\":[],\"default_caller_id\":\"\"}}""#,
            // p config (Ruby < 3.4), with irb's result marker
            r#"=> {"inbound"=>{"block_caller_ids"=>[{"caller_id"=>"4930123", "note"=>nil}]}, "outbound"=>{"routing_table"=>[], "default_caller_id"=>""}}"#,
            // Ruby 3.4, symbol keys
            r#"{inbound: {block_caller_ids: [{"caller_id" => "4930123", :note => nil}]}, "outbound" => {routing_table: [], default_caller_id: ""}}"#,
        ];
        for form in forms {
            assert_eq!(read_console(form).unwrap(), expected, "{form}");
        }
    }

    #[test]
    fn ruby_escapes_and_numbers_decode() {
        let v =
            read_console(r#"{"note"=>"a\"b\\c\u00e4\u{1F600}\#{x}", "n"=>60, "f"=>-1.5}"#).unwrap();
        assert_eq!(v["note"], "a\"b\\cä😀#{x}");
        assert_eq!(v["n"], 60);
        assert_eq!(v["f"], -1.5);
    }

    #[test]
    fn broken_input_is_explained_without_echoing_all_of_it() {
        let long = format!("{{\"a\"=>{}", "x".repeat(10_000));
        let e = read_console(&long).unwrap_err();
        assert!(e.contains("Ruby hash"), "{e}");
        assert!(e.len() < 200, "{e}");
        let e = read_console("{not json").unwrap_err();
        assert!(e.contains("not valid JSON"), "{e}");
        let deep = "[".repeat(10_000);
        assert!(read_console(&format!("{deep} nil")).is_err());
    }
}
