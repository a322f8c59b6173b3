//! Where each field of a YAML file stands, so problems can be reported as `FILE:LINE:COL`.
//!
//! serde_yaml forgets positions once a document is parsed, so the file is read a second time
//! with yaml-rust2's event parser, which marks every event with its line and column. The result
//! maps a field path (`train.optimizer.lr`, `augment.train.2`) to the position of its key and of
//! its value.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column in the experiment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
}

impl From<Marker> for Position {
    fn from(marker: Marker) -> Self {
        // yaml-rust2 counts lines from 1 but columns from 0.
        Self {
            line: marker.line(),
            column: marker.col() + 1,
        }
    }
}

/// Positions of one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldPositions {
    /// Where the key is written (`lr:`); none for list items.
    pub key: Option<Position>,
    /// Where the value starts.
    pub value: Position,
}

/// What the top level of a YAML document holds, for a clear message when it is not a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopLevel {
    /// No document at all (empty file or only comments).
    Empty,
    /// A mapping, as an experiment must be.
    Mapping,
    /// A list.
    Sequence,
    /// A single scalar.
    Scalar,
}

/// A YAML syntax error with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Where the parser stopped.
    pub position: Position,
    /// The parser's explanation.
    pub message: String,
}

/// A key written twice in the same mapping. YAML parsers keep one of the values silently, so the
/// other setting would be ignored without a word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateKey {
    /// Dotted path of the field.
    pub path: String,
    /// Where the key is written the first time.
    pub first: Position,
    /// Where it is written again.
    pub again: Position,
}

/// Field positions of a whole document.
#[derive(Debug, Default)]
pub struct PositionMap {
    fields: HashMap<String, FieldPositions>,
    top_level: Option<TopLevel>,
    duplicates: Vec<DuplicateKey>,
}

impl PositionMap {
    /// Parses `text` and records the position of every field.
    pub fn parse(text: &str) -> Result<Self, SyntaxError> {
        let mut recorder = Recorder::default();
        let mut parser = Parser::new_from_str(text);
        parser
            .load(&mut recorder, false)
            .map_err(|error| SyntaxError {
                position: Position::from(*error.marker()),
                message: error.info().to_owned(),
            })?;
        Ok(Self {
            fields: recorder.fields,
            top_level: Some(recorder.top_level.unwrap_or(TopLevel::Empty)),
            duplicates: recorder.duplicates,
        })
    }

    /// Keys written more than once in the same mapping, in file order.
    pub fn duplicates(&self) -> &[DuplicateKey] {
        &self.duplicates
    }

    /// What the document's top level is.
    pub fn top_level(&self) -> TopLevel {
        self.top_level.unwrap_or(TopLevel::Empty)
    }

    /// Positions of the field at `path` (dotted, list indices as numbers), if the file has it.
    pub fn get(&self, path: &str) -> Option<FieldPositions> {
        self.fields.get(path).copied()
    }

    /// Position of the field at `path` or, when the file lacks it, of its nearest ancestor.
    pub fn nearest(&self, path: &str) -> Option<FieldPositions> {
        let mut current = path;
        loop {
            if let Some(found) = self.get(current) {
                return Some(found);
            }
            match current.rfind('.') {
                Some(cut) => current = &current[..cut],
                // A top-level field: the document itself.
                None if !current.is_empty() => current = "",
                None => return None,
            }
        }
    }
}

/// One open container while walking the events.
enum Frame {
    Mapping {
        path: String,
        /// The key read and waiting for its value, with its position.
        pending_key: Option<(String, Position)>,
    },
    Sequence {
        path: String,
        next_index: usize,
    },
}

#[derive(Default)]
struct Recorder {
    stack: Vec<Frame>,
    root_key_seen: bool,
    fields: HashMap<String, FieldPositions>,
    top_level: Option<TopLevel>,
    duplicates: Vec<DuplicateKey>,
}

fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_owned()
    } else {
        format!("{parent}.{child}")
    }
}

impl Recorder {
    /// Called at the start of every value (scalar, mapping or sequence); returns its path.
    fn begin_value(&mut self, position: Position, kind: TopLevel) -> Option<String> {
        let (path, key) = match self.stack.last_mut() {
            None => {
                if self.top_level.is_none() {
                    self.top_level = Some(kind);
                    self.fields.insert(
                        String::new(),
                        FieldPositions {
                            key: None,
                            value: position,
                        },
                    );
                }
                return Some(String::new());
            }
            Some(Frame::Sequence { path, next_index }) => {
                let item = join(path, &next_index.to_string());
                *next_index += 1;
                (item, None)
            }
            Some(Frame::Mapping { path, pending_key }) => match pending_key.take() {
                Some((key, key_position)) => (join(path, &key), Some(key_position)),
                None => return None,
            },
        };
        if let Some(first) = self.fields.get(&path).and_then(|earlier| earlier.key)
            && let Some(again) = key
        {
            self.duplicates.push(DuplicateKey {
                path: path.clone(),
                first,
                again,
            });
        }
        self.fields.insert(
            path.clone(),
            FieldPositions {
                key,
                value: position,
            },
        );
        Some(path)
    }

    /// A scalar in key position of a mapping: remember it as the pending key.
    fn take_key(&mut self, text: &str, position: Position) -> bool {
        if let Some(Frame::Mapping { pending_key, path }) = self.stack.last_mut()
            && pending_key.is_none()
        {
            *pending_key = Some((text.to_owned(), position));
            // yaml-rust2 marks a block mapping's start after its first key; the document is
            // better shown at that first key.
            if path.is_empty()
                && self.stack.len() == 1
                && let Some(root) = self.fields.get_mut("")
                && !self.root_key_seen
            {
                root.value = position;
                self.root_key_seen = true;
            }
            return true;
        }
        false
    }
}

impl MarkedEventReceiver for Recorder {
    fn on_event(&mut self, event: Event, marker: Marker) {
        let position = Position::from(marker);
        match event {
            Event::Scalar(text, ..) if !self.take_key(&text, position) => {
                self.begin_value(position, TopLevel::Scalar);
            }
            Event::Alias(_) if !self.take_key("*alias", position) => {
                self.begin_value(position, TopLevel::Scalar);
            }
            Event::MappingStart(..) => {
                // A mapping used as a key is unusual; give it a placeholder name.
                if self.take_key("{mapping}", position) {
                    self.stack.push(Frame::Mapping {
                        path: "{mapping}".into(),
                        pending_key: None,
                    });
                    return;
                }
                let path = self
                    .begin_value(position, TopLevel::Mapping)
                    .unwrap_or_default();
                self.stack.push(Frame::Mapping {
                    path,
                    pending_key: None,
                });
            }
            Event::SequenceStart(..) => {
                if self.take_key("{sequence}", position) {
                    self.stack.push(Frame::Sequence {
                        path: "{sequence}".into(),
                        next_index: 0,
                    });
                    return;
                }
                let path = self
                    .begin_value(position, TopLevel::Sequence)
                    .unwrap_or_default();
                self.stack.push(Frame::Sequence {
                    path,
                    next_index: 0,
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keys_values_and_list_items() {
        let text =
            "name: x\ntrain:\n  optimizer:\n    lr: 0.1\naugment:\n  train:\n    - a: 1\n    - b\n";
        let map = PositionMap::parse(text).unwrap();
        assert_eq!(map.top_level(), TopLevel::Mapping);
        let lr = map.get("train.optimizer.lr").unwrap();
        assert_eq!(lr.key, Some(Position { line: 4, column: 5 }));
        assert_eq!(lr.value, Position { line: 4, column: 9 });
        assert_eq!(map.get("augment.train.1").unwrap().value.line, 8);
        assert_eq!(map.get("augment.train.0.a").unwrap().value.line, 7);
        assert_eq!(
            map.nearest("train.optimizer.beta")
                .unwrap()
                .key
                .map(|p| p.line),
            Some(3)
        );
        assert_eq!(map.nearest("model.name").unwrap().value.line, 1);
    }

    #[test]
    fn reports_syntax_errors_with_position() {
        let error = PositionMap::parse("name: x\ntrain: [1, 2\nseed: 3\n").unwrap_err();
        assert!(error.position.line >= 2, "{error:?}");
        assert!(!error.message.is_empty());
    }

    #[test]
    fn finds_keys_written_twice_in_one_mapping() {
        let map =
            PositionMap::parse("seed: 1\ntrain:\n  epochs: 2\n  epochs: 3\nseed: 4\n").unwrap();
        let found: Vec<(&str, usize, usize)> = map
            .duplicates()
            .iter()
            .map(|duplicate| {
                (
                    duplicate.path.as_str(),
                    duplicate.first.line,
                    duplicate.again.line,
                )
            })
            .collect();
        assert_eq!(found, [("train.epochs", 3, 4), ("seed", 1, 5)]);
        assert!(
            PositionMap::parse("a: {x: 1}\nb: {x: 1}\n")
                .unwrap()
                .duplicates()
                .is_empty()
        );
    }

    #[test]
    fn tells_empty_and_non_mapping_documents() {
        assert_eq!(
            PositionMap::parse("# nothing\n").unwrap().top_level(),
            TopLevel::Empty
        );
        assert_eq!(
            PositionMap::parse("- a\n- b\n").unwrap().top_level(),
            TopLevel::Sequence
        );
        assert_eq!(
            PositionMap::parse("just text\n").unwrap().top_level(),
            TopLevel::Scalar
        );
    }
}
