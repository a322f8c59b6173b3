//! The metrics runs are compared and ranked by, with the short names `evaluate.metric` and
//! `vilab compare --sort` accept for them: one type, so the spec's validation and the tables
//! cannot disagree on a name.

/// A headline metric of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricName {
    /// The best validation ACC1 of the raw weights over the epochs.
    BestValAcc1,
    /// The best validation ACC5 of the raw weights over the epochs.
    BestValAcc5,
    /// The best validation ACC1 of the EMA weights over the epochs.
    EmaValAcc1,
    /// The training loss of the last epoch.
    FinalTrainLoss,
    /// The validation loss of the last epoch.
    FinalValLoss,
    /// Macro-averaged F1 of the evaluated (best) weights on the validation split.
    ValMacroF1,
    /// Epochs trained.
    Epochs,
    /// Time spent in the epochs.
    TrainSeconds,
}

impl MetricName {
    /// Every metric, in the order tables show them.
    pub const ALL: [MetricName; 8] = [
        Self::BestValAcc1,
        Self::BestValAcc5,
        Self::EmaValAcc1,
        Self::FinalTrainLoss,
        Self::FinalValLoss,
        Self::ValMacroF1,
        Self::Epochs,
        Self::TrainSeconds,
    ];

    /// Short names accepted besides the machine names, in the order messages list them.
    pub const ALIASES: [(&'static str, MetricName); 10] = [
        ("val_acc1", Self::BestValAcc1),
        ("acc1", Self::BestValAcc1),
        ("val_acc5", Self::BestValAcc5),
        ("acc5", Self::BestValAcc5),
        ("ema_acc1", Self::EmaValAcc1),
        ("train_loss", Self::FinalTrainLoss),
        ("loss", Self::FinalTrainLoss),
        ("val_loss", Self::FinalValLoss),
        ("macro_f1", Self::ValMacroF1),
        ("f1", Self::ValMacroF1),
    ];

    /// The machine name (`best_val_acc1`), used in CSV and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::BestValAcc1 => "best_val_acc1",
            Self::BestValAcc5 => "best_val_acc5",
            Self::EmaValAcc1 => "ema_val_acc1",
            Self::FinalTrainLoss => "final_train_loss",
            Self::FinalValLoss => "final_val_loss",
            Self::ValMacroF1 => "val_macro_f1",
            Self::Epochs => "epochs",
            Self::TrainSeconds => "train_seconds",
        }
    }

    /// The table label.
    pub fn label(self) -> &'static str {
        match self {
            Self::BestValAcc1 => "best val ACC1 %",
            Self::BestValAcc5 => "best val ACC5 %",
            Self::EmaValAcc1 => "EMA val ACC1 %",
            Self::FinalTrainLoss => "final train loss",
            Self::FinalValLoss => "final val loss",
            Self::ValMacroF1 => "val macro F1",
            Self::Epochs => "epochs",
            Self::TrainSeconds => "train time s",
        }
    }

    /// Digits after the point when printed.
    pub fn decimals(self) -> usize {
        match self {
            Self::BestValAcc1 | Self::BestValAcc5 | Self::EmaValAcc1 => 2,
            Self::FinalTrainLoss | Self::FinalValLoss | Self::ValMacroF1 => 4,
            Self::Epochs => 0,
            Self::TrainSeconds => 1,
        }
    }

    /// Whether a larger value is better (for sorting and "best" marks).
    pub fn higher_is_better(self) -> bool {
        !matches!(
            self,
            Self::FinalTrainLoss | Self::FinalValLoss | Self::TrainSeconds
        )
    }

    /// The order that puts the best value first (highest or lowest, as the metric wants) and
    /// missing or non-finite values last; a stable sort keeps those in their order.
    pub fn best_first(self, a: Option<f64>, b: Option<f64>) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        let finite = |value: Option<f64>| value.filter(|value| value.is_finite());
        match (finite(a), finite(b)) {
            (Some(x), Some(y)) if self.higher_is_better() => y.total_cmp(&x),
            (Some(x), Some(y)) => x.total_cmp(&y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        }
    }

    /// The metric a name or alias stands for; `None` for an unknown name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALIASES
            .iter()
            .find(|(alias, _)| *alias == name)
            .map(|(_, metric)| *metric)
            .or_else(|| Self::ALL.into_iter().find(|metric| metric.name() == name))
    }

    /// Every name [`MetricName::parse`] accepts: the aliases, then the machine names.
    pub fn accepted_names() -> Vec<&'static str> {
        Self::ALIASES
            .iter()
            .map(|(alias, _)| *alias)
            .chain(Self::ALL.iter().map(|metric| metric.name()))
            .collect()
    }
}

impl std::fmt::Display for MetricName {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_and_alias_parses_back() {
        for metric in MetricName::ALL {
            assert_eq!(MetricName::parse(metric.name()), Some(metric));
        }
        assert_eq!(MetricName::parse("acc1"), Some(MetricName::BestValAcc1));
        assert_eq!(MetricName::parse("loss"), Some(MetricName::FinalTrainLoss));
        assert_eq!(MetricName::parse("accuracy"), None);
        assert_eq!(MetricName::accepted_names().len(), 18);
    }
}
