//! `vilab predict` and `vilab export` through the real binary, on one small run trained once
//! for the whole file (vil_micro, one epoch on a copy of data1 at 16×16): predicting the run's
//! validation images reproduces what its evaluate stage reported, image by image; exported
//! weights loaded back as a checkpoint (`--model`, through the loader `model.pretrained` uses)
//! give the same probabilities as the run; broken and hidden files, a too-large `--topk`, a
//! folder that is not a run, missing EMA weights and existing output files are handled as the
//! CLI promises.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;

use crate::common::{Output, copy_tree, repo_root, run_vilab};

/// The run folder, relative to the workspace, as the tests pass it.
const RUN: &str = "out/predict/latest";

/// Side of the images the run trains on (data1 holds 28×28 images, so every image is resized
/// on the way in, by evaluation and by predict alike).
const IMAGE_SIZE: u32 = 16;

/// The workspace with the trained run, made once for all tests of this file.
fn workspace() -> &'static Path {
    static WORKSPACE: OnceLock<PathBuf> = OnceLock::new();
    WORKSPACE.get_or_init(|| trained_workspace("cli_predict", ""))
}

/// A workspace `name` under Cargo's scratch folder with one run trained on data1 at
/// `IMAGE_SIZE`, `data_extra` added to the spec's `data` section.
fn trained_workspace(name: &str, data_extra: &str) -> PathBuf {
    // Cargo's scratch folder for integration tests: one fixed place per target folder,
    // emptied here, so nothing accumulates and no test leaves files in /tmp.
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    if root.exists() {
        std::fs::remove_dir_all(&root).expect("clear the previous workspace");
    }
    copy_tree(&repo_root().join("data1"), &root.join("data"));
    std::fs::write(
        root.join("exp.yaml"),
        format!(
            "name: predict\nseed: 42\n\
             data:\n  root: data\n  image_size: {IMAGE_SIZE}\n{data_extra}\
             split:\n  val_fraction: 0.3\n  seed: 42\n\
             model:\n  name: vil_micro\n\
             train:\n  epochs: 1\n  batch_size: 32\n"
        ),
    )
    .expect("write exp.yaml");
    run_vilab(&root, &["run", "exp.yaml", "--out", "out", "--quiet"])
        .assert_code(0)
        .assert_no_panic();
    assert!(root.join(RUN).join("run.json").is_file(), "no run folder");
    root
}

/// `vilab ARGS` in the workspace.
fn vilab(args: &[&str]) -> Output {
    let output = run_vilab(workspace(), args);
    output.assert_no_panic();
    output
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// A CSV as its header and rows.
fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader =
        csv::Reader::from_path(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let header = reader
        .headers()
        .expect("header")
        .iter()
        .map(String::from)
        .collect();
    let rows = reader
        .records()
        .map(|record| record.expect("record").iter().map(String::from).collect())
        .collect();
    (header, rows)
}

/// The validation manifest of the run in `root`: (path relative to the data root, class).
fn validation_images(root: &Path) -> Vec<(String, String)> {
    let (header, rows) = read_csv(&root.join(RUN).join("split/val.csv"));
    assert_eq!(header, ["path", "class", "label"]);
    rows.into_iter()
        .map(|row| (row[0].clone(), row[1].clone()))
        .collect()
}

#[test]
fn predicting_the_validation_images_reproduces_the_evaluation() {
    assert_predictions_reproduce_the_evaluation(workspace());
}

/// With `data.storage_size` the packs keep a larger copy (20² of data1's 28² images, resized to
/// 16² only by the final transform): predict must prepare images the same way, not squash
/// them straight to 16².
#[test]
fn predicting_with_a_storage_size_reproduces_the_evaluation() {
    let root = trained_workspace("cli_predict_storage", "  storage_size: 20\n");
    let config = read_json(&root.join(RUN).join("train/best/config.json"));
    assert_eq!(config["storage_size"], 20, "{config}");
    assert_predictions_reproduce_the_evaluation(&root);
}

/// `vilab predict` on the validation images of the run in `root` finds what its evaluate
/// stage found, image by image.
fn assert_predictions_reproduce_the_evaluation(root: &Path) {
    let images = validation_images(root);
    assert_eq!(images.len(), 300);
    let mut args = vec![
        "predict",
        RUN,
        "--out",
        "val_predictions.csv",
        "--topk",
        "3",
    ];
    let files: Vec<String> = images
        .iter()
        .map(|(path, _)| format!("data/{path}"))
        .collect();
    args.extend(files.iter().map(String::as_str));
    let output = run_vilab(root, &args);
    output.assert_code(0).assert_no_panic();
    assert!(
        !output.stderr.contains("skipped"),
        "no validation image may be skipped:\n{}",
        output.stderr
    );

    let (header, rows) = read_csv(&root.join("val_predictions.csv"));
    assert_eq!(
        header,
        [
            "file",
            "top1_class",
            "top1_prob",
            "top2_class",
            "top2_prob",
            "top3_class",
            "top3_prob"
        ]
    );
    assert_eq!(rows.len(), images.len());
    let mut wrong: BTreeMap<String, (String, f64)> = BTreeMap::new();
    for (row, (path, class)) in rows.iter().zip(&images) {
        assert_eq!(
            row[0],
            format!("data/{path}"),
            "rows keep the argument order"
        );
        if &row[1] != class {
            wrong.insert(path.clone(), (row[1].clone(), row[2].parse().unwrap()));
        }
    }

    let evaluation = root.join(RUN).join("evaluate");
    let scores = &read_json(&evaluation.join("metrics.json"))["best"]["val"];
    let evaluated = scores["images"].as_u64().expect("images");
    assert_eq!(evaluated, images.len() as u64);
    let acc1 = scores["acc1"].as_f64().expect("acc1");
    let evaluated_correct = (acc1 * evaluated as f64 / 100.0).round() as usize;
    assert_eq!(
        images.len() - wrong.len(),
        evaluated_correct,
        "predict's correct count differs from evaluate's ACC1 {acc1}%"
    );
    // Image by image: the files evaluation got wrong, what it predicted for them and with which
    // probability (written there with 6 decimals, so they agree to half a unit of the 6th).
    let (header, misclassified) = read_csv(&evaluation.join("misclassified.csv"));
    assert_eq!(
        header[..4],
        ["file", "true_class", "predicted_class", "probability"]
    );
    let evaluation_wrong: BTreeMap<String, (String, f64)> = misclassified
        .into_iter()
        .map(|row| (row[0].clone(), (row[2].clone(), row[3].parse().unwrap())))
        .collect();
    assert_eq!(
        wrong.keys().collect::<Vec<_>>(),
        evaluation_wrong.keys().collect::<Vec<_>>()
    );
    for (file, (class, probability)) in &wrong {
        let (evaluated_class, evaluated_probability) = &evaluation_wrong[file];
        assert_eq!(class, evaluated_class, "{file}");
        assert!(
            (probability - evaluated_probability).abs() <= 5.01e-7,
            "{file}: probability {probability} here, {evaluated_probability} in evaluation"
        );
    }
}

#[test]
fn exported_weights_loaded_as_a_checkpoint_give_the_same_probabilities() {
    let output = vilab(&["export", RUN, "--out", "export/vil.safetensors"]);
    output.assert_code(0);
    let export = workspace().join("export");
    let weights = std::fs::read(export.join("vil.safetensors")).expect("exported weights");
    let trained = std::fs::read(workspace().join(RUN).join("train/best/model.safetensors"))
        .expect("trained weights");
    assert!(weights == trained, "export must copy the evaluated weights");
    let names = safetensors_names(&weights);
    for official in [
        "patch_embed.proj.weight",
        "pos_embed.embed",
        "blocks.0.layer.proj_up.weight",
        "head.weight",
    ] {
        assert!(
            names.contains(&official.to_owned()),
            "{official}: {names:?}"
        );
    }

    let classes: Vec<String> = serde_json::from_value(read_json(&export.join("classes.json")))
        .expect("classes.json is a list of names");
    let config = read_json(&workspace().join(RUN).join("train/best/config.json"));
    assert_eq!(classes, config["classes"].as_array().unwrap().clone());
    let normalization = read_json(&export.join("normalization.json"));
    assert_eq!(normalization["image_size"], IMAGE_SIZE);
    assert_eq!(normalization["mean"], config["mean"]);
    assert_eq!(normalization["std"], config["std"]);
    let triple = |values: &Value| {
        values
            .as_array()
            .unwrap()
            .iter()
            .map(|value| value.as_f64().unwrap().to_string())
            .collect::<Vec<_>>()
            .join(",")
    };

    let from_run = vilab(&[
        "predict",
        RUN,
        "data/Bag",
        "data/Sandal",
        "--probs",
        "all",
        "--out",
        "run_all.csv",
    ]);
    from_run.assert_code(0);
    let from_file = vilab(&[
        "predict",
        "--model",
        "vil_micro",
        "--image-size",
        &IMAGE_SIZE.to_string(),
        "--weights",
        "export/vil.safetensors",
        "--classes",
        &classes.join(","),
        "--mean",
        &triple(&normalization["mean"]),
        "--std",
        &triple(&normalization["std"]),
        "--probs",
        "all",
        "--out",
        "file_all.csv",
        "data/Bag",
        "data/Sandal",
    ]);
    from_file.assert_code(0);
    assert!(
        from_file.stderr.contains("export/vil.safetensors: loaded "),
        "the load report is printed:\n{}",
        from_file.stderr
    );

    let (run_header, run_rows) = read_csv(&workspace().join("run_all.csv"));
    let (file_header, file_rows) = read_csv(&workspace().join("file_all.csv"));
    let mut expected_header = vec!["file".to_owned()];
    expected_header.extend(classes.iter().cloned());
    assert_eq!(run_header, expected_header);
    assert_eq!(file_header, expected_header);
    assert_eq!(run_rows.len(), 200);
    assert_eq!(file_rows.len(), run_rows.len());
    for row in &run_rows {
        let sum: f64 = row[1..].iter().map(|p| p.parse::<f64>().unwrap()).sum();
        assert!(
            (sum - 1.0).abs() < 1e-4,
            "{}: probabilities sum to {sum}",
            row[0]
        );
    }
    // The same bytes, model and preprocessing give the same f32 values, each written as the
    // shortest decimal that reads back to it: the CSVs are equal as text.
    assert_eq!(run_rows, file_rows);
}

/// The tensor names in a safetensors file's header.
fn safetensors_names(bytes: &[u8]) -> Vec<String> {
    let length = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, Value> =
        serde_json::from_slice(&bytes[8..8 + length]).expect("safetensors header");
    header
        .keys()
        .filter(|name| *name != "__metadata__")
        .cloned()
        .collect()
}

#[test]
fn broken_and_hidden_files_are_skipped_and_topk_is_clipped_to_the_classes() {
    let folder = workspace().join("mixed");
    std::fs::create_dir_all(folder.join("nested")).unwrap();
    let sample = |class: &str, index: usize| {
        let mut names: Vec<PathBuf> = std::fs::read_dir(workspace().join("data").join(class))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        names.sort();
        names[index].clone()
    };
    std::fs::copy(sample("Bag", 0), folder.join("a_bag.png")).unwrap();
    std::fs::copy(sample("Coat", 0), folder.join("nested/b_coat.png")).unwrap();
    std::fs::copy(sample("Dress", 0), folder.join("c_dress.png")).unwrap();
    std::fs::copy(sample("Bag", 1), folder.join(".hidden.png")).unwrap();
    let png = std::fs::read(sample("Sandal", 0)).unwrap();
    std::fs::write(folder.join("broken.png"), &png[..png.len() / 2]).unwrap();

    let output = vilab(&[
        "predict",
        RUN,
        "mixed",
        "--topk",
        "20",
        "--out",
        "mixed.csv",
    ]);
    output.assert_code(0);
    insta::assert_snapshot!("mixed_folder_stderr", output.stderr);

    let (header, rows) = read_csv(&workspace().join("mixed.csv"));
    assert_eq!(
        header.len(),
        1 + 2 * 10,
        "top-k clipped to 10 classes: {header:?}"
    );
    assert_eq!(header[19], "top10_class");
    let files: Vec<&str> = rows.iter().map(|row| row[0].as_str()).collect();
    assert_eq!(
        files,
        [
            "mixed/a_bag.png",
            "mixed/c_dress.png",
            "mixed/nested/b_coat.png"
        ]
    );
    for row in &rows {
        let probabilities: Vec<f32> = row[2..]
            .iter()
            .step_by(2)
            .map(|p| p.parse().unwrap())
            .collect();
        assert!(
            probabilities.windows(2).all(|pair| pair[0] >= pair[1]),
            "ranked best first: {row:?}"
        );
        let sum: f32 = probabilities.iter().sum();
        assert!((sum - 1.0).abs() < 1e-4, "every class listed once: {row:?}");
        let mut listed: Vec<&String> = row[1..].iter().step_by(2).collect();
        listed.sort();
        listed.dedup();
        assert_eq!(listed.len(), 10);
    }

    let only_broken = vilab(&["predict", RUN, "mixed/broken.png", "--out", "none.csv"]);
    only_broken.assert_code(1);
    assert!(
        !workspace().join("none.csv").exists(),
        "no CSV without predictions"
    );
    insta::assert_snapshot!("only_broken_stderr", only_broken.stderr);
}

#[test]
fn a_folder_that_is_not_a_run_is_one_line_of_error_with_exit_code_2() {
    let output = vilab(&["predict", "data/Bag", "data/Bag"]);
    output.assert_code(2);
    assert_eq!(output.stdout, "");
    assert_eq!(output.stderr.lines().count(), 1, "{}", output.stderr);
    insta::assert_snapshot!("not_a_run", output.stderr);

    let export = vilab(&["export", "data", "--out", "nowhere/model.safetensors"]);
    export.assert_code(2);
    assert_eq!(export.stderr.lines().count(), 1, "{}", export.stderr);
    assert!(!workspace().join("nowhere").exists());

    // Training keeps an EMA by default and exports it as `ema/`, so these weights exist.
    let ema = vilab(&["predict", RUN, "--weights", "ema", "data/Bag"]);
    ema.assert_code(0);
    assert!(ema.stdout.lines().count() > 1, "{}", ema.stdout);
}

#[test]
fn existing_files_are_replaced_only_with_force() {
    let existing = workspace().join("existing.csv");
    std::fs::write(&existing, "keep me\n").unwrap();
    let refused = vilab(&["predict", RUN, "data/Bag", "--out", "existing.csv"]);
    refused.assert_code(2);
    insta::assert_snapshot!("existing_out", refused.stderr);
    assert_eq!(std::fs::read_to_string(&existing).unwrap(), "keep me\n");

    vilab(&[
        "predict",
        RUN,
        "data/Bag",
        "--out",
        "existing.csv",
        "--force",
    ])
    .assert_code(0);
    let (header, rows) = read_csv(&existing);
    assert_eq!(header[0], "file");
    assert_eq!(rows.len(), 100);

    let folder = workspace().join("taken");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("classes.json"), "[]\n").unwrap();
    let refused = vilab(&["export", RUN, "--out", "taken/model.safetensors"]);
    refused.assert_code(2);
    assert!(
        refused
            .stderr
            .contains("taken/classes.json: already exists"),
        "{}",
        refused.stderr
    );
    assert!(
        !folder.join("model.safetensors").exists(),
        "nothing written when refused"
    );
    vilab(&["export", RUN, "--out", "taken/model.safetensors", "--force"]).assert_code(0);
    let classes: Vec<String> =
        serde_json::from_value(read_json(&folder.join("classes.json"))).unwrap();
    assert_eq!(classes.len(), 10);
}
