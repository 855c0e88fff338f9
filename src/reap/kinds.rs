//! The closed sets of words a policy is made of, named once for Rust (sql/reap.sql's CHECK
//! constraints name them once for SQL): parsed at registration and when a batch loads a
//! policy, compared as enums everywhere else.

/// How the time column holds a time.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TimeKind {
    Timestamptz,
    Timestamp,
    UnixMs,
    UnixS,
    Ulid,
}

impl TimeKind {
    const ALL: [TimeKind; 5] = [TimeKind::Timestamptz, TimeKind::Timestamp, TimeKind::UnixMs, TimeKind::UnixS, TimeKind::Ulid];

    pub fn as_str(self) -> &'static str {
        match self {
            TimeKind::Timestamptz => "timestamptz",
            TimeKind::Timestamp => "timestamp",
            TimeKind::UnixMs => "unix_ms",
            TimeKind::UnixS => "unix_s",
            TimeKind::Ulid => "ulid",
        }
    }

    pub fn parse(word: &str) -> Option<TimeKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == word)
    }

    /// The words, for messages.
    pub fn list() -> String {
        Self::ALL.map(TimeKind::as_str).join(", ")
    }
}

/// What children a policy does not name get when their foreign key would make a delete fail.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Dependents {
    None,
    Block,
    Delete,
}

impl Dependents {
    const ALL: [Dependents; 3] = [Dependents::None, Dependents::Block, Dependents::Delete];

    pub fn as_str(self) -> &'static str {
        match self {
            Dependents::None => "none",
            Dependents::Block => "block",
            Dependents::Delete => "delete",
        }
    }

    pub fn parse(word: &str) -> Option<Dependents> {
        Self::ALL.into_iter().find(|d| d.as_str() == word)
    }
}

#[cfg(test)]
mod tests {
    use super::{Dependents, TimeKind};

    #[test]
    fn every_word_parses_back() {
        for k in TimeKind::ALL {
            assert_eq!(TimeKind::parse(k.as_str()), Some(k));
        }
        for d in Dependents::ALL {
            assert_eq!(Dependents::parse(d.as_str()), Some(d));
        }
        assert_eq!(TimeKind::parse("unix_ns"), None);
    }
}
