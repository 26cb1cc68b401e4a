//! Reading LIBSVM text: bytes of text per second through `read_libsvm_with_threads`, on
//! one and two parser threads, plain and gzip, for a generated CTR file of 200k rows
//! (about 27 MB of text). The files live in a temporary directory and stay in the page
//! cache, so this measures the parse, not the disk.
//!
//! `ASYB_PARSE_BENCH_FILES="a.svm b.svm.gz"` adds files of your own, such as the output
//! of `asyb gen ctr --rows 2000000`.

use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};

use asyb::data::gen::{write_ctr, CtrSpec};
use asyb::data::libsvm::read_libsvm_with_threads;
use asyb::data::ReadOptions;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const THREADS: [usize; 2] = [1, 2];

fn gzip(plain: &Path, out: &Path) {
    let text = std::fs::read(plain).expect("read the generated file");
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(&text).expect("compress");
    std::fs::write(out, e.finish().expect("compress")).expect("write the gzip file");
}

fn bench_file(c: &mut Criterion, group_name: &str, name: &str, path: &Path) {
    let opts = ReadOptions::default();
    // Throughput counts the text after decompression.
    let (_, report) = read_libsvm_with_threads(path, &opts, 1).expect("read the file");
    let mut group = c.benchmark_group(group_name);
    group.sample_size(10);
    group.throughput(Throughput::Bytes(report.bytes));
    for threads in THREADS {
        group.bench_with_input(BenchmarkId::new(name, threads), &threads, |b, &threads| {
            b.iter(|| read_libsvm_with_threads(black_box(path), &opts, threads).expect("read"))
        });
    }
    group.finish();
}

fn read_ctr(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let plain = dir.path().join("ctr.svm");
    let spec = CtrSpec {
        rows: 200_000,
        ..CtrSpec::default()
    };
    write_ctr(&spec, &plain).expect("generate");
    let gz = dir.path().join("ctr.svm.gz");
    gzip(&plain, &gz);
    bench_file(c, "read_ctr_200k", "plain", &plain);
    bench_file(c, "read_ctr_200k", "gzip", &gz);

    let extra = std::env::var("ASYB_PARSE_BENCH_FILES").unwrap_or_default();
    for p in extra.split_whitespace().map(PathBuf::from) {
        let name = p
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into());
        bench_file(c, "read_file", &name, &p);
    }
}

criterion_group!(benches, read_ctr);
criterion_main!(benches);
