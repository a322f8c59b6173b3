//! The classification report and confusion matrix against scikit-learn on a fixed fixture.
//!
//! The fixture has five classes: `fish` (3) occurs 9 times but is never predicted, and `frog`
//! (4) is predicted 9 times but never occurs, so both zero-division rules are exercised. The
//! expected values were produced by this snippet (scikit-learn 1.9.1), printed with `repr`:
//!
//! ```python
//! from sklearn.metrics import classification_report, confusion_matrix
//! y_true = [1, 2, 3, 1, 1, 0, 0, 1, 3, 2, 1, 0, 1, 1, 0, 1, 0, 2, 0, 0, 1, 2, 3, 1, 3, 0, 1, 1, 1, 1,
//!           3, 1, 2, 1, 3, 1, 3, 1, 2, 2, 1, 0, 0, 0, 1, 0, 3, 1, 1, 3, 1, 0, 0, 2, 1, 1, 0, 1, 0, 1]
//! y_pred = [4, 2, 2, 1, 1, 0, 0, 1, 1, 0, 1, 0, 2, 1, 0, 1, 0, 2, 0, 0, 1, 2, 4, 1, 1, 0, 1, 2, 0, 1,
//!           4, 1, 2, 1, 2, 1, 0, 1, 2, 4, 2, 2, 4, 0, 1, 0, 1, 1, 4, 4, 4, 0, 0, 2, 1, 1, 0, 2, 0, 4]
//! names = ["cat", "dog", "bird", "fish", "frog"]
//! report = classification_report(y_true, y_pred, labels=range(5), target_names=names,
//!                                zero_division=0, output_dict=True)
//! for key, value in report.items():
//!     if isinstance(value, dict):
//!         print(key, [repr(value[k]) for k in ("precision", "recall", "f1-score", "support")])
//!     else:
//!         print(key, repr(value))
//! print(confusion_matrix(y_true, y_pred, labels=range(5)).tolist())
//! ```

use vilab::metrics::report::{ClassReport, ClassificationReport, ConfusionMatrix};

const TRUE_LABELS: [usize; 60] = [
    1, 2, 3, 1, 1, 0, 0, 1, 3, 2, 1, 0, 1, 1, 0, 1, 0, 2, 0, 0, 1, 2, 3, 1, 3, 0, 1, 1, 1,
    1, //
    3, 1, 2, 1, 3, 1, 3, 1, 2, 2, 1, 0, 0, 0, 1, 0, 3, 1, 1, 3, 1, 0, 0, 2, 1, 1, 0, 1, 0, 1,
];
const PREDICTED: [usize; 60] = [
    4, 2, 2, 1, 1, 0, 0, 1, 1, 0, 1, 0, 2, 1, 0, 1, 0, 2, 0, 0, 1, 2, 4, 1, 1, 0, 1, 2, 0,
    1, //
    4, 1, 2, 1, 2, 1, 0, 1, 2, 4, 2, 2, 4, 0, 1, 0, 1, 1, 4, 4, 4, 0, 0, 2, 1, 1, 0, 2, 0, 4,
];

/// (precision, recall, f1, support) per class, then macro and weighted averages, from sklearn.
const EXPECTED_PER_CLASS: [(f64, f64, f64, u64); 5] = [
    (0.8235294117647058, 0.875, 0.8484848484848485, 16),
    (0.8571428571428571, 0.6666666666666666, 0.75, 27),
    (0.46153846153846156, 0.75, 0.5714285714285714, 8),
    (0.0, 0.0, 0.0, 9),
    (0.0, 0.0, 0.0, 0),
];
const EXPECTED_ACCURACY: f64 = 0.6333333333333333;
const EXPECTED_MACRO: (f64, f64, f64, u64) = (
    0.4284421460892049,
    0.4583333333333333,
    0.43398268398268397,
    60,
);
const EXPECTED_WEIGHTED: (f64, f64, f64, u64) = (
    0.6668605903900021,
    0.6333333333333333,
    0.6399531024531024,
    60,
);
const EXPECTED_CONFUSION: [[u64; 5]; 5] = [
    [14, 0, 1, 0, 1],
    [1, 18, 4, 0, 4],
    [1, 0, 6, 0, 1],
    [1, 3, 2, 0, 3],
    [0, 0, 0, 0, 0],
];

const TOLERANCE: f64 = 1e-9;

fn class_names() -> Vec<String> {
    ["cat", "dog", "bird", "fish", "frog"]
        .map(str::to_owned)
        .to_vec()
}

fn assert_matches(what: &str, actual: &ClassReport, expected: (f64, f64, f64, u64)) {
    let (precision, recall, f1, support) = expected;
    for (field, got, want) in [
        ("precision", actual.precision, precision),
        ("recall", actual.recall, recall),
        ("f1", actual.f1, f1),
    ] {
        assert!(
            (got - want).abs() <= TOLERANCE,
            "{what} {field}: got {got:?}, sklearn {want:?}"
        );
    }
    assert_eq!(actual.support, support, "{what} support");
}

fn fixture_report() -> ClassificationReport {
    ClassificationReport::from_labels(&TRUE_LABELS, &PREDICTED, &class_names()).unwrap()
}

#[test]
fn report_matches_scikit_learn() {
    let report = fixture_report();
    assert_eq!(report.classes, class_names());
    assert_eq!(report.per_class.len(), 5);
    for ((name, actual), expected) in report
        .classes
        .iter()
        .zip(&report.per_class)
        .zip(EXPECTED_PER_CLASS)
    {
        assert_matches(name, actual, expected);
    }
    assert!((report.accuracy - EXPECTED_ACCURACY).abs() <= TOLERANCE);
    assert_matches("macro avg", &report.macro_avg, EXPECTED_MACRO);
    assert_matches("weighted avg", &report.weighted_avg, EXPECTED_WEIGHTED);
    assert_eq!(report.total, 60);
}

#[test]
fn confusion_matrix_matches_scikit_learn() {
    let matrix = ConfusionMatrix::from_labels(&TRUE_LABELS, &PREDICTED, 5).unwrap();
    let expected: Vec<Vec<u64>> = EXPECTED_CONFUSION.iter().map(|row| row.to_vec()).collect();
    assert_eq!(matrix.counts, expected);
    assert_eq!(
        ClassificationReport::from_confusion(&matrix, &class_names()).unwrap(),
        fixture_report()
    );
}

#[test]
fn report_csv_round_trips() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("classification_report.csv");
    let report = fixture_report();
    report.to_csv(&path).unwrap();

    let mut reader = csv::Reader::from_path(&path).unwrap();
    assert_eq!(
        reader.headers().unwrap(),
        vec!["class", "precision", "recall", "f1", "support"]
    );
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let names: Vec<&str> = records.iter().map(|record| &record[0]).collect();
    assert_eq!(
        names,
        [
            "cat",
            "dog",
            "bird",
            "fish",
            "frog",
            "accuracy",
            "macro avg",
            "weighted avg"
        ]
    );
    let parse = |record: &csv::StringRecord| ClassReport {
        precision: record[1].parse().unwrap(),
        recall: record[2].parse().unwrap(),
        f1: record[3].parse().unwrap(),
        support: record[4].parse().unwrap(),
    };
    for (record, expected) in records.iter().zip(&report.per_class) {
        assert_eq!(&parse(record), expected, "row {}", &record[0]);
    }
    let accuracy = &records[5];
    assert_eq!((&accuracy[1], &accuracy[2], &accuracy[4]), ("", "", "60"));
    assert_eq!(accuracy[3].parse::<f64>().unwrap(), report.accuracy);
    assert_eq!(parse(&records[6]), report.macro_avg);
    assert_eq!(parse(&records[7]), report.weighted_avg);
}

#[test]
fn markdown_rounds_like_scikit_learn_text() {
    let markdown = fixture_report().to_markdown();
    let lines: Vec<&str> = markdown.lines().collect();
    assert_eq!(lines.len(), 2 + 5 + 3);
    assert_eq!(
        lines[0],
        "| class | precision | recall | f1-score | support |"
    );
    // The same digits as sklearn's `classification_report(..., digits=4)` text.
    assert_eq!(lines[2], "| cat | 0.8235 | 0.8750 | 0.8485 | 16 |");
    assert_eq!(lines[6], "| frog | 0.0000 | 0.0000 | 0.0000 | 0 |");
    assert_eq!(lines[7], "| **accuracy** | | | 0.6333 | 60 |");
    assert_eq!(
        lines[8],
        "| **macro avg** | 0.4284 | 0.4583 | 0.4340 | 60 |"
    );
    assert_eq!(
        lines[9],
        "| **weighted avg** | 0.6669 | 0.6333 | 0.6400 | 60 |"
    );
}

#[test]
fn confusion_csv_has_class_names_on_both_axes() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("confusion_matrix.csv");
    let matrix = ConfusionMatrix::from_labels(&[0, 1, 1, 2], &[0, 1, 2, 2], 3).unwrap();
    let names = ["a", "b, c", "d"].map(str::to_owned);
    matrix.to_csv(&path, &names).unwrap();
    assert_eq!(
        fs_err::read_to_string(&path).unwrap(),
        "true\\predicted,a,\"b, c\",d\na,1,0,0\n\"b, c\",0,1,1\nd,0,0,1\n"
    );
    let error = matrix.to_csv(&path, &names[..2]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "2 class names given for a 3-class confusion matrix"
    );
}
