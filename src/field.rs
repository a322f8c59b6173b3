//! A problem with one field of a configuration, named by its dotted path relative to whoever
//! checked it: the model's, the recipe's and the augmentations' own `validate` functions say
//! `decay: must be in [0, 1)`, and each caller that knows where the section sits prefixes its
//! path ([`FieldError::within`]), up to the experiment file (`train.ema.decay`), where
//! `spec` gives it a line and column.

/// A field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// Dotted path of the field (`ema.decay`, `devices.1`).
    pub field: String,
    /// What is wrong, with the value found.
    pub message: String,
}

impl FieldError {
    /// `field` is wrong: `message`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same problem seen from the section that holds this one (`ema` ⇒ `ema.decay`).
    pub fn within(self, section: &str) -> Self {
        Self {
            field: format!("{section}.{}", self.field),
            message: self.message,
        }
    }
}

/// A [`FieldError`] with `format!` arguments for both parts:
/// `field_error!("betas.{index}", "must be in [0, 1) (got {beta})")`.
#[macro_export]
macro_rules! field_error {
    ($field:literal, $($message:tt)+) => {
        $crate::field::FieldError::new(format!($field), format!($($message)+))
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn fields_read_as_paths_from_the_outermost_section() {
        let (index, beta) = (0, 1.5);
        let error = field_error!("betas.{index}", "must be in [0, 1) (got {beta})")
            .within("optimizer")
            .within("train");
        assert_eq!(error.field, "train.optimizer.betas.0");
        assert_eq!(
            error.to_string(),
            "train.optimizer.betas.0: must be in [0, 1) (got 1.5)"
        );
    }
}
