//! Loader throughput in images per second, to check the loader outpaces the model (issue 4 asks
//! for at least three times the images/s the model consumes).
//!
//! Two settings, each with one and two worker threads:
//! - quickstart: data1/ packed at 28², batch 64, no augmentation, no mixing (the fast path);
//! - blog: data1/ packed at 224² (256 images), batch 16, the plant-seedlings recipe's train list
//!   (rotation 10°, Gaussian blur 5 with σ in [0.1, 3], colour jitter 0.5/0.5/0.5, one Cutout
//!   hole of a quarter side) and its MixUp/CutMix (α 0.8 / 1.0, prob 0.1, label smoothing 0.1).
//!
//! Each iteration loads one whole epoch, so thread start-up and the end-of-epoch drain count,
//! as they do in training. Run with `cargo bench --bench loader`.
//!
//! The blog setting runs a second time timed by the process's CPU time (all its threads) instead
//! of the wall clock: its throughput is images per CPU-second, the loader's speed per core, which
//! holds on a machine shared with other work and does not depend on how many cores the workers
//! find free.

// A benchmark stops at a broken fixture; the no-unwrap rule is for the library.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tempfile::TempDir;
use vilab::data::loader::{LoaderConfig, batches};
use vilab::data::mixup::MixupConfig;
use vilab::data::pack::{PackedSplit, write_pack};
use vilab::data::scan::scan_image_folder;
use vilab::data::transforms::Transform;

/// Fashion-MNIST's mean and std, close to what the `stats` stage measures on data1/.
const MEAN: [f32; 3] = [0.286; 3];
const STD: [f32; 3] = [0.353; 3];

fn data1() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data1")
}

/// data1/ packed at `size`, keeping at most `limit` images spread over all classes.
fn pack_data1(folder: &TempDir, size: u32, limit: usize) -> Arc<PackedSplit> {
    let scan = scan_image_folder(&data1()).expect("data1/ scans");
    let stride = scan.files.len().div_ceil(limit).max(1);
    let entries: Vec<(String, usize)> = scan
        .files
        .into_iter()
        .step_by(stride)
        .map(|file| (file.rel_path, file.class))
        .collect();
    let name = format!("train{size}");
    write_pack(folder.path(), &name, &data1(), &entries, size).expect("data1/ packs");
    Arc::new(PackedSplit::open(folder.path(), &name).expect("pack opens"))
}

fn blog_transforms() -> Vec<Transform> {
    serde_json::from_str(
        r#"[
            {"rotation": {"degrees": 10}},
            {"gaussian_blur": {"kernel_size": 5, "sigma": [0.1, 3.0]}},
            {"color_jitter": {"brightness": 0.5, "contrast": 0.5, "saturation": 0.5}},
            {"cutout": {"holes": 1, "fraction": 0.25}}
        ]"#,
    )
    .expect("the blog's transform list parses")
}

fn blog_mixup() -> MixupConfig {
    MixupConfig {
        mixup_alpha: 0.8,
        cutmix_alpha: 1.0,
        prob: 0.1,
        switch_prob: 0.5,
        label_smoothing: 0.1,
        ..MixupConfig::default()
    }
}

fn config(batch_size: usize, image_size: u32, workers: usize) -> LoaderConfig {
    LoaderConfig {
        batch_size,
        shuffle: true,
        drop_last: true,
        seed: 42,
        workers,
        prefetch: 4,
        image_size,
        mean: MEAN,
        std: STD,
        transforms: Vec::new(),
        mixup: None,
    }
}

/// CPU time used by the whole process, every thread included.
struct ProcessCpuTime;

impl ProcessCpuTime {
    fn now() -> Duration {
        let mut time = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `time` is a valid, writable timespec; the clock id is a constant Linux defines.
        let status = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut time) };
        assert_eq!(status, 0, "the process CPU clock is readable");
        Duration::new(time.tv_sec as u64, time.tv_nsec as u32)
    }
}

/// Durations print the same whichever clock measured them.
static WALL_TIME: WallTime = WallTime;

impl Measurement for ProcessCpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        ProcessCpuTime::now()
    }

    fn end(&self, start: Duration) -> Duration {
        ProcessCpuTime::now().saturating_sub(start)
    }

    fn add(&self, first: &Duration, second: &Duration) -> Duration {
        *first + *second
    }

    fn zero(&self) -> Duration {
        Duration::ZERO
    }

    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        WALL_TIME.formatter()
    }
}

fn bench_epochs<M: Measurement>(
    criterion: &mut Criterion<M>,
    group_name: &str,
    pack: &Arc<PackedSplit>,
    base: &LoaderConfig,
) {
    let images = (pack.len() / base.batch_size * base.batch_size) as u64;
    let mut group = criterion.benchmark_group(group_name);
    group.throughput(Throughput::Elements(images));
    group.sample_size(10);
    for workers in [1, 2] {
        let config = LoaderConfig {
            workers,
            ..base.clone()
        };
        let mut epoch = 0;
        group.bench_function(format!("workers_{workers}"), |bencher| {
            bencher.iter(|| {
                epoch += 1;
                let loader = batches(Arc::clone(pack), &config, epoch, 10).expect("loader starts");
                loader.map(|batch| batch.n).sum::<usize>()
            });
        });
    }
    group.finish();
}

fn blog_config() -> LoaderConfig {
    LoaderConfig {
        transforms: blog_transforms(),
        mixup: Some(blog_mixup()),
        ..config(16, 224, 1)
    }
}

fn loader_throughput(criterion: &mut Criterion) {
    let folder = tempfile::tempdir().expect("temporary folder");
    let small = pack_data1(&folder, 28, 1000);
    bench_epochs(
        criterion,
        "quickstart_28px_batch64",
        &small,
        &config(64, 28, 1),
    );

    let large = pack_data1(&folder, 224, 256);
    bench_epochs(criterion, "blog_224px_batch16", &large, &blog_config());
    bench_epochs(
        criterion,
        "plain_224px_batch16",
        &large,
        &config(16, 224, 1),
    );
}

fn loader_throughput_per_core(criterion: &mut Criterion<ProcessCpuTime>) {
    let folder = tempfile::tempdir().expect("temporary folder");
    let large = pack_data1(&folder, 224, 256);
    bench_epochs(
        criterion,
        "blog_224px_batch16_per_cpu_second",
        &large,
        &blog_config(),
    );
}

criterion_group!(benches, loader_throughput);
criterion_group! {
    name = per_core;
    config = Criterion::default().with_measurement(ProcessCpuTime);
    targets = loader_throughput_per_core
}
criterion_main!(benches, per_core);
