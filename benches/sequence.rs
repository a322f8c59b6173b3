//! Where the chunkwise mLSTM overtakes the parallel form: forward + backward time and peak
//! memory of `mlstm::parallel_stabilized` and `chunkwise::chunkwise_stabilized` on the CPU
//! backend (burn NdArray f32, with autodiff) for 49, 100, 144, 196, 441, 784, 1600 and 3136
//! tokens (7² to 56² patches), batch 1, 4 heads, head_dim 48 (ViL-T's layer shape).
//!
//! Run by hand: `cargo bench --bench sequence` (criterion filters work: `-- chunkwise`). With
//! `SEQUENCE_PLOT=docs/sequence_length.png` set it also draws time and memory against the token
//! count for both forms into that file. The figures feed `chunkwise::CPU_CHUNKWISE_MIN_TOKENS`.
//!
//! Peak memory is counted by a global allocator that tracks the bytes live at any moment: the
//! peak above the bytes live before one forward + backward, inputs included, measured on one
//! extra untimed run per case. The counting costs both forms the same in the timed runs.

// A benchmark stops at a broken fixture; the no-unwrap rule is for the library.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::RefCell;
use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use burn::backend::{Autodiff, NdArray};
use burn::tensor::{Distribution, Tensor};
use criterion::{BenchmarkId, Criterion, Throughput};
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};
use vilab::model::chunkwise::{DEFAULT_CHUNK, chunkwise_stabilized};
use vilab::model::mlstm::parallel_stabilized;

type Training = Autodiff<NdArray<f32>>;

const TOKENS: [usize; 8] = [49, 100, 144, 196, 441, 784, 1600, 3136];
const BATCH: usize = 1;
const HEADS: usize = 4;
const HEAD_DIM: usize = 48;

/// Bytes live now and the most live since the last [`reset_peak`].
static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static PEAK_BYTES: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting live bytes.
struct CountingAllocator;

// SAFETY: every call is forwarded to `System` unchanged; only counters are updated around it.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            added(layout.size());
        }
        pointer
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let pointer = unsafe { System.alloc_zeroed(layout) };
        if !pointer.is_null() {
            added(layout.size());
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(pointer, layout) };
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let moved = unsafe { System.realloc(pointer, layout, new_size) };
        if !moved.is_null() {
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
            added(new_size);
        }
        moved
    }
}

fn added(size: usize) {
    let live = LIVE_BYTES.fetch_add(size, Ordering::Relaxed) + size;
    PEAK_BYTES.fetch_max(live, Ordering::Relaxed);
}

fn reset_peak() -> usize {
    let live = LIVE_BYTES.load(Ordering::Relaxed);
    PEAK_BYTES.store(live, Ordering::Relaxed);
    live
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

#[derive(Clone, Copy, PartialEq)]
enum Form {
    Parallel,
    Chunkwise,
}

impl Form {
    fn name(self) -> &'static str {
        match self {
            Form::Parallel => "parallel",
            Form::Chunkwise => "chunkwise",
        }
    }
}

/// One measured case.
struct Measurement {
    form: Form,
    tokens: usize,
    seconds: f64,
    peak_bytes: usize,
}

/// Forward and backward of one form on fresh random inputs with gradients for all five.
fn forward_backward(form: Form, tokens: usize) {
    let device = Default::default();
    let random = |width: usize| {
        Tensor::<Training, 4>::random(
            [BATCH, HEADS, tokens, width],
            Distribution::Normal(0.0, 1.0),
            &device,
        )
        .require_grad()
    };
    let (query, key, value) = (random(HEAD_DIM), random(HEAD_DIM), random(HEAD_DIM));
    let (input_gate, forget_gate) = (random(1), random(1) + 3.0);
    let output = match form {
        Form::Parallel => parallel_stabilized(query, key, value, input_gate, forget_gate),
        Form::Chunkwise => {
            chunkwise_stabilized(query, key, value, input_gate, forget_gate, DEFAULT_CHUNK)
        }
    };
    black_box(output.sum().backward());
}

fn bench_sequence(criterion: &mut Criterion) -> Vec<Measurement> {
    let mut measurements = Vec::new();
    let mut group = criterion.benchmark_group("mlstm forward+backward");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for tokens in TOKENS {
        group.throughput(Throughput::Elements((BATCH * tokens) as u64));
        for form in [Form::Parallel, Form::Chunkwise] {
            let timed = RefCell::new((Duration::ZERO, 0u64));
            group.bench_function(BenchmarkId::new(form.name(), tokens), |bencher| {
                bencher.iter_custom(|iterations| {
                    let start = Instant::now();
                    for _ in 0..iterations {
                        forward_backward(form, tokens);
                    }
                    let elapsed = start.elapsed();
                    let mut timed = timed.borrow_mut();
                    timed.0 += elapsed;
                    timed.1 += iterations;
                    elapsed
                });
            });
            let (total, iterations) = timed.into_inner();
            if iterations == 0 {
                // Filtered out on the command line.
                continue;
            }
            let before = reset_peak();
            forward_backward(form, tokens);
            let peak_bytes = PEAK_BYTES.load(Ordering::Relaxed).saturating_sub(before);
            measurements.push(Measurement {
                form,
                tokens,
                seconds: total.as_secs_f64() / iterations as f64,
                peak_bytes,
            });
        }
    }
    group.finish();
    measurements
}

fn print_table(measurements: &[Measurement]) {
    println!("\nform       tokens  ms/iteration  peak MiB");
    for measurement in measurements {
        println!(
            "{:<9} {:>7} {:>13.2} {:>9.1}",
            measurement.form.name(),
            measurement.tokens,
            measurement.seconds * 1e3,
            measurement.peak_bytes as f64 / (1u64 << 20) as f64
        );
    }
}

static DEJAVU_SANS: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/fonts/DejaVuSans.ttf"
));
const FAMILY: &str = "sans-serif";
const PARALLEL_COLOR: RGBColor = RGBColor(31, 119, 180);
const CHUNKWISE_COLOR: RGBColor = RGBColor(255, 127, 14);

/// Two log-log panels, time and peak memory against tokens, one line per form.
fn write_plot(path: &Path, measurements: &[Measurement]) -> Result<(), Box<dyn std::error::Error>> {
    register_font(FAMILY, FontStyle::Normal, DEJAVU_SANS)
        .map_err(|_| "the bundled font does not parse")?;
    let root = BitMapBackend::new(path, (1200, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, 2));
    let tokens_range = (TOKENS[0] as f64 * 0.8)..(TOKENS[TOKENS.len() - 1] as f64 * 1.25);
    type Value = fn(&Measurement) -> f64;
    let quantities: [(&str, &str, Value); 2] = [
        (
            "Forward + backward time",
            "ms per iteration",
            |measurement| measurement.seconds * 1e3,
        ),
        ("Peak memory", "MiB", |measurement| {
            measurement.peak_bytes as f64 / (1u64 << 20) as f64
        }),
    ];
    for (panel, (title, unit, value)) in panels.iter().zip(quantities) {
        let values = measurements.iter().map(value);
        let low = values.clone().fold(f64::INFINITY, f64::min).max(1e-3);
        let high = values.fold(f64::NEG_INFINITY, f64::max).max(low * 10.0);
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("{title} (batch {BATCH}, {HEADS} heads, head_dim {HEAD_DIM})"),
                (FAMILY, 18),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(
                tokens_range
                    .clone()
                    .log_scale()
                    .with_key_points(TOKENS.map(|tokens| tokens as f64).to_vec()),
                (low * 0.7..high * 1.4).log_scale(),
            )?;
        chart
            .configure_mesh()
            .x_desc("tokens S")
            .y_desc(unit)
            .x_label_formatter(&|tokens| format!("{tokens:.0}"))
            .y_label_formatter(&|value| {
                if *value >= 10.0 {
                    format!("{value:.0}")
                } else {
                    format!("{value:.1}")
                }
            })
            .label_style((FAMILY, 13))
            .light_line_style(TRANSPARENT)
            .draw()?;
        for (form, color) in [
            (Form::Parallel, PARALLEL_COLOR),
            (Form::Chunkwise, CHUNKWISE_COLOR),
        ] {
            let points: Vec<(f64, f64)> = measurements
                .iter()
                .filter(|measurement| measurement.form == form)
                .map(|measurement| (measurement.tokens as f64, value(measurement)))
                .collect();
            let label = match form {
                Form::Parallel => "parallel (S×S)".to_owned(),
                Form::Chunkwise => format!("chunkwise (chunk {DEFAULT_CHUNK})"),
            };
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                .label(label)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
            chart.draw_series(
                points
                    .into_iter()
                    .map(|point| Circle::new(point, 4, color.filled())),
            )?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font((FAMILY, 13))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    let measurements = bench_sequence(&mut criterion);
    criterion.final_summary();
    print_table(&measurements);
    if let Some(path) = std::env::var_os("SEQUENCE_PLOT") {
        let path = Path::new(&path);
        if let Err(error) = write_plot(path, &measurements) {
            eprintln!("error: {}: {error}", path.display());
            std::process::exit(1);
        }
        println!("wrote {}", path.display());
    }
}
