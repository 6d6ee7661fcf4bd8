//! A command's full name, `app.name`, written and read in one place: the
//! app is what comes before the first dot, the name all that follows.

use std::fmt;
use std::str::FromStr;

/// `app.name`: the app that registered a command, and its name there.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommandName {
    app: String,
    name: String,
}

/// A string that is not `app.name` (no dot, or nothing on one side of it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a command is named app.name, got {0:?}")]
pub struct NotACommandName(pub String);

impl CommandName {
    pub fn new(app: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            app: app.into(),
            name: name.into(),
        }
    }

    /// Reads `app.name`; the app has no dot, the name may.
    pub fn parse(full: &str) -> Result<Self, NotACommandName> {
        match full.split_once('.') {
            Some((app, name)) if !app.is_empty() && !name.is_empty() => Ok(Self::new(app, name)),
            _ => Err(NotACommandName(full.to_owned())),
        }
    }

    pub fn app(&self) -> &str {
        &self.app
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn into_parts(self) -> (String, String) {
        (self.app, self.name)
    }
}

impl fmt::Display for CommandName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.app, self.name)
    }
}

impl FromStr for CommandName {
    type Err = NotACommandName;

    fn from_str(full: &str) -> Result<Self, Self::Err> {
        Self::parse(full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_app_ends_at_the_first_dot() {
        let name = CommandName::parse("notebook.podcast.v2").unwrap();
        assert_eq!((name.app(), name.name()), ("notebook", "podcast.v2"));
        for bad in ["podcast", ".podcast", "notebook.", ""] {
            assert_eq!(
                CommandName::parse(bad),
                Err(NotACommandName(bad.to_owned()))
            );
        }
    }

    proptest! {
        #[test]
        fn a_name_reads_back_as_itself(app in "[a-z_]{1,8}", name in "[a-z_.]{0,8}[a-z]") {
            let written = CommandName::new(&app, &name).to_string();
            prop_assert_eq!(CommandName::parse(&written), Ok(CommandName::new(app, name)));
        }
    }
}
