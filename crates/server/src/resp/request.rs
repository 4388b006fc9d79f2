//! Parsing client requests: RESP multibulk arrays (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`) and
//! inline commands (`GET k\r\n`, as typed into telnet).
//!
//! Two phases, as in mini-redis: [`check`] walks the buffered bytes and says whether a whole
//! request is there, how long it is and where its arguments lie, refusing any length above its
//! limit *before* anything is buffered for it (a `$999999999` header is an error at once);
//! [`parse`] then slices the arguments out of the complete request without copying.

use bytes::{Bytes, BytesMut};
use ringkv_core::limits::{KEY_BYTES_MAX, VALUE_BYTES_MAX};
use smallvec::SmallVec;

/// Most arguments one request may have (Redis allows 1024*1024 too).
pub const ARGUMENTS_MAX: usize = 1024 * 1024;

/// Longest single argument: a maximal value, with room to spare for command words.
pub const ARGUMENT_BYTES_MAX: usize = VALUE_BYTES_MAX + KEY_BYTES_MAX;

/// Longest whole request (bounds MSET of many values, and the connection's read buffer).
pub const REQUEST_BYTES_MAX: usize = 64 << 20;

/// Longest inline command line.
pub const INLINE_BYTES_MAX: usize = 64 * 1024;

const _: () = assert!(ARGUMENT_BYTES_MAX < REQUEST_BYTES_MAX);

/// A request that can never become valid; the connection is closed after replying with it,
/// as Redis does.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct ProtocolError(pub String);

fn protocol_error(message: impl Into<String>) -> ProtocolError {
    ProtocolError(message.into())
}

/// A complete request that [`check`] found at the front of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Found {
    /// Its length in bytes.
    length: usize,
    /// Where each argument of a multibulk request lies (offset, length), noted while checking
    /// so [`parse`] need not read the headers again; `None` for an inline request.
    arguments: Option<SmallVec<[(usize, usize); 8]>>,
}

impl Found {
    /// The request's length in bytes.
    pub fn bytes(&self) -> usize {
        self.length
    }

    /// The request as one of the [`Common`] commands, read in place from `buffer` (which
    /// holds this request at its front); `None` for any other request, inline ones included.
    pub fn common<'b>(&self, buffer: &'b [u8]) -> Option<Common<'b>> {
        let argument = |&(at, len): &(usize, usize)| &buffer[at..at + len];
        match self.arguments.as_deref()? {
            [name, key] if argument(name).eq_ignore_ascii_case(b"get") => {
                Some(Common::Get { key: argument(key) })
            }
            [name, key, value] if argument(name).eq_ignore_ascii_case(b"set") => {
                Some(Common::Set {
                    key: argument(key),
                    value: argument(value),
                })
            }
            _ => None,
        }
    }
}

/// The two commands common enough to be run without building their arguments: `GET key` and
/// `SET key value` without options (names in any case).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Common<'b> {
    /// `GET key`.
    Get { key: &'b [u8] },
    /// `SET key value`.
    Set { key: &'b [u8], value: &'b [u8] },
}

/// The first complete request in `buffer`, `None` if more bytes are needed.
pub fn check(buffer: &[u8]) -> Result<Option<Found>, ProtocolError> {
    match buffer.first() {
        None => Ok(None),
        Some(b'*') => check_multibulk(buffer),
        Some(_) => Ok(check_inline(buffer)?.map(|length| Found {
            length,
            arguments: None,
        })),
    }
}

/// Splits the request [`check`] found off `buffer` and returns its arguments (empty for a
/// blank line or `*0`), sharing the buffer's bytes.
pub fn parse(buffer: &mut BytesMut, found: Found) -> Vec<Bytes> {
    let request = buffer.split_to(found.length).freeze();
    match found.arguments {
        Some(arguments) => arguments
            .iter()
            .map(|&(at, len)| request.slice(at..at + len))
            .collect(),
        // `check` refused a line whose quotes do not close, so this splits.
        None => split_inline(&request).unwrap_or_default(),
    }
}

/// Reads `<marker><decimal>\r\n` at `at`; returns the number and the bytes it took.
fn read_line_number(buffer: &[u8], at: usize) -> Result<Option<(i64, usize)>, ProtocolError> {
    let rest = &buffer[at..];
    // Every header a client sends is a few digits and CRLF: read those in one pass. Up to 18
    // digits cannot overflow; anything else (a sign, more digits, bad bytes, a line not all
    // here yet) takes the checked path below.
    let (mut number, mut end) = (0i64, 1);
    while end < rest.len().min(19) {
        let digit = rest[end].wrapping_sub(b'0');
        if digit > 9 {
            break;
        }
        number = number * 10 + i64::from(digit);
        end += 1;
    }
    if end > 1 && rest.get(end..end + 2) == Some(b"\r\n") {
        return Ok(Some((number, end + 2)));
    }
    read_line_number_checked(rest)
}

/// [`read_line_number`] of any line: refuses what is not a length, waits for what is not
/// all here.
fn read_line_number_checked(rest: &[u8]) -> Result<Option<(i64, usize)>, ProtocolError> {
    // A length line is short; refuse a long one before waiting for its end.
    let window = &rest[..rest.len().min(32)];
    let Some(end) = window.iter().position(|&b| b == b'\r') else {
        return if rest.len() >= 32 {
            Err(protocol_error("invalid length line"))
        } else {
            Ok(None)
        };
    };
    if rest.len() < end + 2 {
        return Ok(None);
    }
    if rest[end + 1] != b'\n' {
        return Err(protocol_error("expected CRLF after length"));
    }
    let digits = &rest[1..end];
    // Redis's words for a count or a length that is not a number.
    let number = parse_decimal(digits).ok_or_else(|| match rest[0] {
        b'*' => protocol_error("invalid multibulk length"),
        _ => protocol_error("invalid bulk length"),
    })?;
    Ok(Some((number, end + 2)))
}

/// Parses a decimal i64 as Redis reads integers: an optional `-` and digits, no `+`, no
/// spaces, in range. Every request header and integer argument goes through it, so it reads
/// the bytes directly rather than through `str::from_utf8` and `str::parse`.
pub fn parse_decimal(digits: &[u8]) -> Option<i64> {
    let (negative, digits) = match digits {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, digits),
    };
    if digits.is_empty() {
        return None;
    }
    // Accumulated negatively, so that i64::MIN, one further from zero than i64::MAX, fits.
    let mut number: i64 = 0;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return None;
        }
        number = number
            .checked_mul(10)?
            .checked_sub(i64::from(digit - b'0'))?;
    }
    if negative {
        Some(number)
    } else {
        number.checked_neg()
    }
}

fn check_multibulk(buffer: &[u8]) -> Result<Option<Found>, ProtocolError> {
    let Some((count, mut at)) = read_line_number(buffer, 0)? else {
        return Ok(None);
    };
    if count > ARGUMENTS_MAX as i64 {
        return Err(protocol_error("invalid multibulk length"));
    }
    let mut arguments = SmallVec::new();
    for _ in 0..count.max(0) {
        if at >= buffer.len() {
            return Ok(None);
        }
        if buffer[at] != b'$' {
            return Err(protocol_error(format!(
                "expected '$', got '{}'",
                buffer[at] as char
            )));
        }
        let Some((len, header)) = read_line_number(buffer, at)? else {
            return Ok(None);
        };
        if !(0..=ARGUMENT_BYTES_MAX as i64).contains(&len) {
            return Err(protocol_error("invalid bulk length"));
        }
        arguments.push((at + header, len as usize));
        at += header + len as usize + 2;
        if at > REQUEST_BYTES_MAX {
            return Err(protocol_error("request too large"));
        }
        if at > buffer.len() {
            return Ok(None);
        }
        if &buffer[at - 2..at] != b"\r\n" {
            return Err(protocol_error("expected CRLF after bulk string"));
        }
    }
    Ok(Some(Found {
        length: at,
        arguments: Some(arguments),
    }))
}

fn check_inline(buffer: &[u8]) -> Result<Option<usize>, ProtocolError> {
    match buffer
        .iter()
        .take(INLINE_BYTES_MAX + 1)
        .position(|&b| b == b'\n')
    {
        Some(end) => {
            // Refused here, where the connection can still answer a protocol error.
            split_inline(&buffer[..end + 1])?;
            Ok(Some(end + 1))
        }
        None if buffer.len() > INLINE_BYTES_MAX => Err(protocol_error("too big inline request")),
        None => Ok(None),
    }
}

/// Splits an inline line into arguments as Redis does (`sdssplitargs`): on whitespace, with
/// double quotes that take the escapes `\xHH`, `\n`, `\r`, `\t`, `\b`, `\a` and a
/// backslash before any other character, and single quotes that take only `\'`. A quote left
/// open, or a closing quote not followed by whitespace, is Redis's protocol error.
fn split_inline(line: &[u8]) -> Result<Vec<Bytes>, ProtocolError> {
    let text = line.strip_suffix(b"\n").unwrap_or(line);
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    let unbalanced = || protocol_error("unbalanced quotes in request");
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    let mut arguments = Vec::new();
    let mut at = 0;
    loop {
        while at < text.len() && is_space(text[at]) {
            at += 1;
        }
        if at == text.len() {
            return Ok(arguments);
        }
        let mut current = Vec::new();
        let mut quote: Option<u8> = None;
        loop {
            let byte = text.get(at).copied();
            match (quote, byte) {
                (Some(_), None) => return Err(unbalanced()),
                (Some(b'"'), Some(b'\\')) if text.get(at + 1) == Some(&b'x') => {
                    let hex = text
                        .get(at + 2..at + 4)
                        .and_then(|h| std::str::from_utf8(h).ok());
                    match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                        Some(value) => {
                            current.push(value);
                            at += 4;
                        }
                        None => {
                            current.push(b'x');
                            at += 2;
                        }
                    }
                    continue;
                }
                (Some(b'"'), Some(b'\\')) if at + 1 < text.len() => {
                    current.push(match text[at + 1] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                    at += 2;
                    continue;
                }
                (Some(b'\''), Some(b'\\')) if text.get(at + 1) == Some(&b'\'') => {
                    current.push(b'\'');
                    at += 2;
                    continue;
                }
                (Some(q), Some(b)) if b == q => {
                    // A closing quote must end the argument.
                    if text.get(at + 1).is_some_and(|&next| !is_space(next)) {
                        return Err(unbalanced());
                    }
                    at += 1;
                    break;
                }
                (Some(_), Some(b)) => current.push(b),
                (None, None) => break,
                (None, Some(b)) if is_space(b) => break,
                (None, Some(b'"' | b'\'')) => quote = byte,
                (None, Some(b)) => current.push(b),
            }
            at += 1;
        }
        arguments.push(Bytes::from(current));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(input: &[u8]) -> Result<Vec<Vec<Bytes>>, ProtocolError> {
        let mut buffer = BytesMut::from(input);
        let mut requests = Vec::new();
        while let Some(found) = check(&buffer)? {
            requests.push(parse(&mut buffer, found));
        }
        Ok(requests)
    }

    #[test]
    fn multibulk_and_inline_requests_parse() {
        let requests = parse_all(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nSET a \"b c\"\r\n").unwrap();
        assert_eq!(requests[0], vec![Bytes::from("GET"), Bytes::from("k")]);
        assert_eq!(
            requests[1],
            vec![Bytes::from("SET"), Bytes::from("a"), Bytes::from("b c")]
        );
    }

    #[test]
    fn inline_arguments_split_as_redis_splits_them() {
        let split = |line: &[u8]| {
            split_inline(line).map(|args| args.iter().map(|a| a.to_vec()).collect::<Vec<_>>())
        };
        assert_eq!(
            split(b"SET  k \"a b\"\r\n").unwrap(),
            [b"SET".to_vec(), b"k".to_vec(), b"a b".to_vec()]
        );
        assert_eq!(
            split(b"ECHO \"\\x41\\x4a\\n\"").unwrap(),
            [b"ECHO".to_vec(), b"AJ\n".to_vec()]
        );
        assert_eq!(
            split(b"ECHO 'it\\'s'").unwrap(),
            [b"ECHO".to_vec(), b"it's".to_vec()]
        );
        assert_eq!(split(b"ECHO \"\"").unwrap(), [b"ECHO".to_vec(), Vec::new()]);
        for refused in [
            &b"SET \"a\"b c"[..],
            b"PING \"x\\\"",
            b"PING 'x",
            b"PING 'a'b",
        ] {
            assert_eq!(
                split(refused),
                Err(protocol_error("unbalanced quotes in request")),
                "{}",
                String::from_utf8_lossy(refused)
            );
        }
    }

    #[test]
    fn an_inline_quote_left_open_is_a_protocol_error() {
        assert_eq!(
            parse_all(b"SET k \"open\r\n").unwrap_err().to_string(),
            "Protocol error: unbalanced quotes in request"
        );
        assert!(parse_all(b"SET k 'a b'\r\n").is_ok());
    }

    #[test]
    fn every_prefix_of_a_request_asks_for_more() {
        let full = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n";
        for cut in 0..full.len() {
            assert_eq!(check(&full[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(
            check(full).unwrap().map(|found| found.bytes()),
            Some(full.len())
        );
    }

    #[test]
    fn huge_declared_lengths_are_refused_before_buffering() {
        assert!(
            check(b"$999999999\r\n").is_ok(),
            "inline: just a strange word"
        );
        assert!(check(b"*1\r\n$999999999\r\n").is_err());
        assert!(check(b"*99999999999\r\n").is_err());
        assert!(check(b"*1\r\n$-5\r\n").is_err());
        assert!(check(&[b'*'; 40]).is_err());
        assert!(check(&vec![b'a'; INLINE_BYTES_MAX + 2]).is_err());
    }

    #[test]
    fn integers_are_plain_decimals() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"-1"), Some(-1));
        assert_eq!(parse_decimal(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_decimal(b"-9223372036854775808"), Some(i64::MIN));
        for refused in [
            &b""[..],
            b"-",
            b"+1",
            b" 1",
            b"1 ",
            b"1x",
            b"9223372036854775808",
            b"-9223372036854775809",
        ] {
            assert_eq!(
                parse_decimal(refused),
                None,
                "{:?}",
                String::from_utf8_lossy(refused)
            );
        }
        assert_eq!(
            check(b"*1\r\n$x\r\n"),
            Err(protocol_error("invalid bulk length"))
        );
        assert_eq!(
            check(b"*x\r\n"),
            Err(protocol_error("invalid multibulk length"))
        );
    }

    proptest! {
        #[test]
        fn decimals_parse_as_rust_does(number: i64, text in "[-+ ]?[0-9]{0,20}") {
            prop_assert_eq!(parse_decimal(number.to_string().as_bytes()), Some(number));
            let expected = text.parse::<i64>().ok().filter(|_| !text.starts_with('+'));
            prop_assert_eq!(parse_decimal(text.as_bytes()), expected);
        }

        #[test]
        fn length_lines_read_as_the_checked_path_reads_them(
            line in "[*$](-?[0-9]{0,22}|[0-9]{1,3}x)(\r\n?)?[0-9]?",
            split in any::<prop::sample::Index>(),
        ) {
            // Whole lines, lines cut anywhere (more bytes to come), and malformed ones.
            let whole = line.as_bytes();
            for bytes in [whole, &whole[..split.index(whole.len() + 1).max(1)]] {
                prop_assert_eq!(read_line_number(bytes, 0), read_line_number_checked(bytes));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(input: Vec<u8>) {
            let _ = parse_all(&input);
        }

        #[test]
        fn encoded_arguments_round_trip(arguments in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..8)) {
            let mut wire = format!("*{}\r\n", arguments.len()).into_bytes();
            for argument in &arguments {
                wire.extend_from_slice(format!("${}\r\n", argument.len()).as_bytes());
                wire.extend_from_slice(argument);
                wire.extend_from_slice(b"\r\n");
            }
            let parsed = parse_all(&wire).unwrap();
            prop_assert_eq!(parsed.len(), 1);
            let parsed: Vec<Vec<u8>> = parsed[0].iter().map(|b| b.to_vec()).collect();
            prop_assert_eq!(parsed, arguments);
        }

        #[test]
        fn common_commands_read_in_place_are_what_the_parser_finds(
            name in "(?i:get|gets|set|ge|mget)",
            arguments in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..4),
            inline in any::<bool>(),
        ) {
            let mut wire = Vec::new();
            if inline {
                wire.extend_from_slice(name.as_bytes());
                wire.extend_from_slice(b" k v\r\n");
            } else {
                wire.extend_from_slice(format!("*{}\r\n${}\r\n{name}\r\n", arguments.len() + 1, name.len()).as_bytes());
                for argument in &arguments {
                    wire.extend_from_slice(format!("${}\r\n", argument.len()).as_bytes());
                    wire.extend_from_slice(argument);
                    wire.extend_from_slice(b"\r\n");
                }
            }
            let found = check(&wire).unwrap().unwrap();
            let common = found.common(&wire);
            let parsed = parse(&mut BytesMut::from(&wire[..]), found);
            // Only multibulk requests are read in place (inline ones, rare, take the general
            // path), and then with the arguments the parser finds.
            let expected = match &parsed[..] {
                [get, key] if !inline && get.eq_ignore_ascii_case(b"get") => {
                    Some(Common::Get { key })
                }
                [set, key, value] if !inline && set.eq_ignore_ascii_case(b"set") => {
                    Some(Common::Set { key, value })
                }
                _ => None,
            };
            prop_assert_eq!(common, expected);
        }
    }
}
