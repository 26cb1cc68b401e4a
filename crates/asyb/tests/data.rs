//! The data layer from the outside: LIBSVM files on disk (plain and compressed, good and
//! bad) and the synthetic generators.

use std::io::Write;
use std::path::{Path, PathBuf};

use asyb::data::gen::{
    ctr, planted_ctr_model, planted_ctr_support, planted_regression, regression, write_ctr,
    write_regression, CtrSpec, RegressionSpec,
};
use asyb::data::libsvm::read_libsvm_with_threads;
use asyb::data::{read_libsvm, write_libsvm, Dataset, IndexBase, LabelRule, ReadOptions};
use asyb::Error;
use proptest::prelude::*;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn put(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn read(path: &Path) -> asyb::Result<Dataset> {
    read_libsvm(path, &ReadOptions::default()).map(|(ds, _)| ds)
}

fn small_ctr(seed: u64) -> CtrSpec {
    CtrSpec {
        rows: 300,
        features: 1 << 12,
        fields: 8,
        values_per_field: 1000,
        seed,
        ..CtrSpec::default()
    }
}

fn small_regression() -> RegressionSpec {
    RegressionSpec {
        rows: 300,
        features: 200,
        nnz_per_row: 10,
        support: 20,
        ..RegressionSpec::default()
    }
}

fn with_features(d: usize) -> ReadOptions {
    ReadOptions {
        features: Some(d),
        ..ReadOptions::default()
    }
}

// ---------------------------------------------------------------- compression helpers

type Compressor = fn(&[u8]) -> Vec<u8>;

fn gz(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn bz2(b: &[u8]) -> Vec<u8> {
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn xz(b: &[u8]) -> Vec<u8> {
    let mut e = xz2::write::XzEncoder::new(Vec::new(), 6);
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn zst(b: &[u8]) -> Vec<u8> {
    let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    e.include_checksum(true).unwrap();
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

const COMPRESSORS: [(&str, Compressor); 4] = [("gz", gz), ("bz2", bz2), ("xz", xz), ("zst", zst)];

// ---------------------------------------------------------------- round trips

#[test]
fn ctr_round_trip_plain() {
    let dir = tmp();
    let spec = small_ctr(1);
    let ds = ctr(&spec).unwrap();
    assert!(ds.values.is_none());
    let p = dir.path().join("ctr.svm");
    write_libsvm(&p, &ds).unwrap();
    let (back, rep) = read_libsvm(&p, &with_features(spec.features)).unwrap();
    assert_eq!(back, ds);
    assert_eq!(rep.rows, spec.rows);
    assert!(rep.index_base_one);
    assert_eq!(rep.skipped_lines, 0);
    assert_eq!(rep.bytes, std::fs::metadata(&p).unwrap().len());

    // Without the feature count, d is the largest index + 1.
    let back = read(&p).unwrap();
    let max = *ds.indices.iter().max().unwrap() as usize;
    assert_eq!(back.features, max + 1);
    assert_eq!(
        Dataset {
            features: spec.features,
            ..back
        },
        ds
    );
}

#[test]
fn regression_round_trip_is_exact() {
    let dir = tmp();
    let spec = small_regression();
    let ds = regression(&spec).unwrap();
    let p = dir.path().join("reg.svm");
    write_libsvm(&p, &ds).unwrap();
    let (back, _) = read_libsvm(&p, &with_features(spec.features)).unwrap();
    // Bitwise: values and labels are printed in their shortest round-trip form.
    assert_eq!(back, ds);
}

#[test]
fn round_trip_through_every_compression() {
    let dir = tmp();
    for (spec_ds, d) in [
        (ctr(&small_ctr(3)).unwrap(), small_ctr(3).features),
        (regression(&small_regression()).unwrap(), 200),
    ] {
        let plain = dir.path().join("plain.svm");
        write_libsvm(&plain, &spec_ds).unwrap();
        let text = std::fs::read(&plain).unwrap();
        for (ext, compress) in COMPRESSORS {
            // A misleading name: the format is told by content.
            let p = put(dir.path(), &format!("data.{ext}.txt"), &compress(&text));
            let (back, rep) = read_libsvm(&p, &with_features(d)).unwrap();
            assert_eq!(back, spec_ds, "{ext}");
            assert_eq!(rep.bytes, text.len() as u64, "{ext}");

            // Concatenated members/streams/frames, as parallel compressors write them.
            let cut = text.len() / 2;
            let cut = cut + text[cut..].iter().position(|&b| b == b'\n').unwrap() + 1;
            let mut two = compress(&text[..cut]);
            two.extend(compress(&text[cut..]));
            let p = put(dir.path(), &format!("multi.{ext}"), &two);
            let (back, _) = read_libsvm(&p, &with_features(d)).unwrap();
            assert_eq!(back, spec_ds, "multi {ext}");
        }
    }
}

#[test]
fn truncated_or_corrupt_compressed_files_fail_naming_the_file() {
    let dir = tmp();
    let ds = ctr(&small_ctr(4)).unwrap();
    let plain = dir.path().join("plain.svm");
    write_libsvm(&plain, &ds).unwrap();
    let text = std::fs::read(&plain).unwrap();
    for (ext, compress) in COMPRESSORS {
        let full = compress(&text);
        let n = full.len();
        for keep in [n / 3, n / 2, n - 9, n - 4, n - 1] {
            let p = put(dir.path(), &format!("cut{keep}.{ext}"), &full[..keep]);
            match read(&p) {
                Ok(ds) => panic!("{ext} cut at {keep}/{n}: read {} rows", ds.rows()),
                Err(e) => {
                    let msg = e.to_string();
                    assert!(msg.contains(&format!("cut{keep}.{ext}")), "{msg}");
                    assert!(matches!(e, Error::Data { .. }), "{ext} {keep}: {msg}");
                    assert!(msg.contains("corrupt or truncated"), "{msg}");
                }
            }
        }
        let mut bad = full.clone();
        bad[n / 2] ^= 0x55;
        let p = put(dir.path(), &format!("flip.{ext}"), &bad);
        let e = read(&p).expect_err(ext);
        assert!(e.to_string().contains(&format!("flip.{ext}")), "{e}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn any_dataset_round_trips(
        rows in proptest::collection::vec(
            (any::<f32>().prop_filter("finite", |x| x.is_finite()),
             proptest::collection::btree_map(0u32..50, any::<f32>().prop_filter("finite", |x| x.is_finite()), 0..8)),
            1..20),
    ) {
        let rows: Vec<(f32, Vec<(u32, f32)>)> =
            rows.into_iter().map(|(l, m)| (l, m.into_iter().collect())).collect();
        let mut ds = Dataset::from_rows(50, &rows);
        ds.compact_binary();
        let dir = tmp();
        let p = dir.path().join("p.svm");
        write_libsvm(&p, &ds).unwrap();
        let opts = ReadOptions { index_base: IndexBase::One, ..with_features(50) };
        let (back, _) = read_libsvm(&p, &opts).unwrap();
        // Bitwise equality (NaN-free), -0.0 included.
        prop_assert_eq!(back.labels.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                        ds.labels.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
        prop_assert_eq!(back, ds);
    }
}

#[test]
fn writer_format_is_one_based_and_short() {
    let dir = tmp();
    let ds = Dataset::from_rows(
        10,
        &[
            (1.0, vec![(0, 1.0), (9, 0.1)]),
            (-1.0, vec![]),
            (0.25, vec![(3, -2.0)]),
        ],
    );
    let p = dir.path().join("w.svm");
    write_libsvm(&p, &ds).unwrap();
    assert_eq!(
        std::fs::read_to_string(&p).unwrap(),
        "1 1:1 10:0.1\n-1\n0.25 4:-2\n"
    );

    let nan = Dataset::from_rows(2, &[(f32::NAN, vec![(0, 1.0)])]);
    let q = dir.path().join("nan.svm");
    let e = write_libsvm(&q, &nan).unwrap_err();
    assert!(matches!(e, Error::Data { .. }), "{e}");
    assert!(!q.exists(), "nothing written on error");
}

// ---------------------------------------------------------------- strictness

/// The line and column of a parse error, `None` for any other error.
fn parse_error_at(e: &Error) -> Option<(u64, u64)> {
    match e {
        Error::Parse { line, col, .. } => Some((*line, *col)),
        _ => None,
    }
}

/// Reads `text` as `bad.svm` and returns the error's message with the directory removed.
fn fail(text: &str, opts: &ReadOptions) -> (Error, String) {
    let dir = tmp();
    let p = put(dir.path(), "bad.svm", text.as_bytes());
    let e = read_libsvm(&p, opts).expect_err(text);
    let msg = e.to_string();
    let prefix = format!("{}", dir.path().display());
    let short = msg
        .strip_prefix(&prefix)
        .map(|s| s.trim_start_matches('/').to_string())
        .unwrap_or(msg);
    (e, short)
}

#[test]
fn every_bad_token_is_a_parse_error_at_its_line_and_column() {
    let one = ReadOptions {
        index_base: IndexBase::One,
        ..ReadOptions::default()
    };
    let binary = ReadOptions {
        labels: LabelRule::Binary,
        ..ReadOptions::default()
    };
    let class = ReadOptions {
        labels: LabelRule::Class,
        ..ReadOptions::default()
    };
    let d10 = with_features(10);
    let one_d10 = ReadOptions {
        index_base: IndexBase::One,
        ..d10.clone()
    };
    let zero_d10 = ReadOptions {
        index_base: IndexBase::Zero,
        ..d10.clone()
    };
    let cases: Vec<(&str, &ReadOptions, &str)> = vec![
        ("1 1:1\nabc 1:1\n", &one, "bad.svm:2:1: label 'abc' is not a number"),
        ("1 1:1\nnan 1:1\n", &one, "bad.svm:2:1: label 'nan' is not a finite number"),
        ("1 1:1\n-inf 1:1\n", &one, "bad.svm:2:1: label '-inf' is not a finite number"),
        (
            "1 1:1\n3:1 4:1\n",
            &one,
            "bad.svm:2:1: missing label: the line starts with the feature '3:1'",
        ),
        (
            "1 1:1\n-1 2:1\n2 3:1\n",
            &binary,
            "bad.svm:3:1: label 2 is not a binary label (expected -1, 0 or +1; for more classes \
             use --loss softmax, for a real target --loss squared or huber)",
        ),
        (
            "0 1:1\n1.5 1:1\n",
            &class,
            "bad.svm:2:1: label 1.5 is not a class label (expected a non-negative integer up to 16777216)",
        ),
        (
            "0 1:1\n-1 1:1\n",
            &class,
            "bad.svm:2:1: label -1 is not a class label (expected a non-negative integer up to 16777216)",
        ),
        ("1 1:1 2\n", &one, "bad.svm:1:7: expected index:value, found '2'"),
        ("1 1:1 x:2\n", &one, "bad.svm:1:7: feature index 'x' is not a non-negative integer"),
        ("1 1:1 2.5:2\n", &one, "bad.svm:1:7: feature index '2.5' is not a non-negative integer"),
        ("1 1:1 -2:2\n", &one, "bad.svm:1:7: feature index -2 is negative"),
        (
            "1 1:1 4294967296:2\n",
            &one,
            "bad.svm:1:7: feature index 4294967296 is too large (largest allowed: 4294967295)",
        ),
        (
            "# header\n\n-1 qid:4 3:1 0:2\n",
            &one,
            "bad.svm:3:14: feature index 0 in a 1-based file",
        ),
        (
            "1 5:1 7:1 5:1\n",
            &one,
            "bad.svm:1:11: feature indices must be strictly increasing: 5 after 7",
        ),
        ("1 5:1 5:1\n", &one, "bad.svm:1:7: duplicate feature index 5"),
        ("1 5:1 6:abc\n", &one, "bad.svm:1:9: feature value 'abc' is not a number"),
        ("1 5:1 6:NaN\n", &one, "bad.svm:1:9: feature value 'NaN' is not a finite number"),
        ("1 5:1 6:inf\n", &one, "bad.svm:1:9: feature value 'inf' is not a finite number"),
        ("1 5:1 6:1e40\n", &one, "bad.svm:1:9: feature value '1e40' is out of the f32 range"),
        ("1 5:1 6:\n", &one, "bad.svm:1:9: missing feature value after ':'"),
        (
            "1 5:1\n1\t11:1\n",
            &one_d10,
            "bad.svm:2:3: feature index 11 is out of range for 10 features (1-based indices must be <= 10)",
        ),
        (
            "1 0:1 10:1\n",
            &zero_d10,
            "bad.svm:1:7: feature index 10 is out of range for 10 features (0-based indices must be < 10)",
        ),
        (
            "1 12:1\n",
            &d10,
            "bad.svm:1:3: feature index 12 is out of range for 10 features",
        ),
        // Auto: 10 is in range for a 1-based file, but index 0 on line 3 makes it 0-based.
        (
            "1 10:1\n1 2:1\n1 0:1\n",
            &d10,
            "bad.svm:1:3: feature index 10 is out of range for 10 features (0-based indices must be < 10; the file is 0-based since line 3 has index 0)",
        ),
    ];
    for (text, opts, want) in cases {
        let (e, msg) = fail(text, opts);
        assert!(matches!(e, Error::Parse { .. }), "{text:?}: {e:?}");
        assert!(e.is_user_input());
        assert_eq!(msg, want, "input {text:?}");
    }
}

#[test]
fn whole_file_errors() {
    let dir = tmp();
    let missing = dir.path().join("nope.svm");
    let e = read(&missing).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    assert!(e.to_string().contains("nope.svm"), "{e}");

    for (name, text) in [
        ("empty.svm", ""),
        ("comments.svm", "# only\n   # comments\n\n\t\r\n"),
    ] {
        let p = put(dir.path(), name, text.as_bytes());
        let e = read(&p).unwrap_err();
        assert!(matches!(e, Error::Data { .. }), "{e:?}");
        assert_eq!(e.to_string(), format!("{}: no data rows", p.display()));
    }
    let p = put(dir.path(), "empty.gz", &gz(b""));
    assert!(read(&p).unwrap_err().to_string().ends_with("no data rows"));

    // Rows without a single feature: d cannot be inferred...
    let p = put(dir.path(), "nofeat.svm", b"1\n-1 # x\n");
    let e = read(&p).unwrap_err();
    assert!(matches!(e, Error::Data { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("{}: no features: every data row is empty", p.display())
    );
    // ...but may be given.
    let (ds, _) = read_libsvm(&p, &with_features(4)).unwrap();
    assert_eq!((ds.rows(), ds.features, ds.nnz()), (2, 4, 0));
    assert_eq!(ds.labels, vec![1.0, -1.0]);
}

#[test]
fn skip_bad_lines_counts_and_keeps_the_rest() {
    let dir = tmp();
    let text = "1 1:1\nx 2:1\n-1 2:0.5\n1 3:1 2:1\n\n0 4:nan\n1 4:2\n";
    let p = put(dir.path(), "mixed.svm", text.as_bytes());
    let opts = ReadOptions {
        skip_bad_lines: true,
        ..ReadOptions::default()
    };
    let (ds, rep) = read_libsvm(&p, &opts).unwrap();
    assert_eq!(rep.skipped_lines, 3);
    assert_eq!(
        rep.first_skipped.as_deref(),
        Some(format!("{}:2:1: label 'x' is not a number", p.display()).as_str())
    );
    assert_eq!(rep.rows, 3);
    assert_eq!(ds.labels, vec![1.0, -1.0, 1.0]);
    assert_eq!(ds.indices, vec![0, 1, 3]);
    assert_eq!(ds.values.as_deref(), Some(&[1.0, 0.5, 2.0][..]));
    assert_eq!(ds.features, 4);

    // Without the option the first bad line fails the read.
    let e = read(&p).unwrap_err();
    assert_eq!(parse_error_at(&e), Some((2, 1)), "{e:?}");

    // All lines bad: still a whole-file error, which mentions what was skipped.
    let p = put(dir.path(), "allbad.svm", b"x\ny 1:1\n");
    let e = read_libsvm(&p, &opts).unwrap_err();
    assert!(matches!(e, Error::Data { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("no data rows (2 bad lines skipped; first: "),
        "{e}"
    );

    // Rows dropped late (Auto base, index == d, file proves 0-based) are counted too,
    // and the earliest skipped line is reported first.
    let p = put(dir.path(), "late.svm", b"1 5:1\n1 x:1\n1 0:1 2:1\n");
    let (ds, rep) = read_libsvm(
        &p,
        &ReadOptions {
            skip_bad_lines: true,
            ..with_features(5)
        },
    )
    .unwrap();
    assert_eq!(rep.skipped_lines, 2);
    assert!(!rep.index_base_one);
    assert!(rep
        .first_skipped
        .unwrap()
        .contains("late.svm:1:3: feature index 5"));
    assert_eq!(ds.rows(), 1);
    assert_eq!(ds.indices, vec![0, 2]);
}

// ---------------------------------------------------------------- index bases and layout

/// A file read after other data (a test file, rows to score) is numbered like them: after
/// 1-based data it is 1-based; after 0-based data it must hold index 0, or it is refused
/// rather than read shifted; an explicit base applies as it is.
#[test]
fn a_following_file_is_numbered_like_the_data_before_it() {
    let dir = tmp();
    let zero = put(dir.path(), "zero.svm", b"1 1:1 3:1\n0 0:2\n");
    let one = put(dir.path(), "one.svm", b"1 1:1 3:1\n0 2:2\n");
    let auto = ReadOptions::default();
    let follow = |p: &Path, o: &ReadOptions, one_based: bool| {
        asyb::data::read_following(p, o, one_based).map(|(ds, _)| ds.indices.to_vec())
    };

    // After 0-based data: a file with index 0 is 0-based; one without is refused, naming
    // the file and the flag (read as 0-based it would shift every feature of a 1-based
    // file by one, the silent error this guards against).
    assert_eq!(follow(&zero, &auto, false).unwrap(), vec![1, 3, 0]);
    let e = follow(&one, &auto, false).unwrap_err();
    match &e {
        Error::Data { path, reason } => {
            assert_eq!(path, &one);
            assert!(reason.contains("--index-base 0"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // After 1-based data: 1-based, and index 0 is an error.
    assert_eq!(follow(&one, &auto, true).unwrap(), vec![0, 2, 1]);
    assert!(matches!(
        follow(&zero, &auto, true).unwrap_err(),
        Error::Parse { line: 2, .. }
    ));
    // An explicit base wins either way.
    let z = ReadOptions {
        index_base: IndexBase::Zero,
        ..ReadOptions::default()
    };
    assert_eq!(follow(&one, &z, false).unwrap(), vec![1, 3, 2]);
    assert_eq!(follow(&one, &z, true).unwrap(), vec![1, 3, 2]);
}

#[test]
fn index_base_detection_and_overrides() {
    let dir = tmp();
    let zero = put(dir.path(), "zero.svm", b"1 1:1 3:1\n0 0:2\n");
    let one = put(dir.path(), "one.svm", b"1 1:1 3:1\n0 2:2\n");

    let (ds, rep) = read_libsvm(&zero, &ReadOptions::default()).unwrap();
    assert!(!rep.index_base_one);
    assert_eq!((ds.indices.to_vec(), ds.features), (vec![1, 3, 0], 4));

    let (ds, rep) = read_libsvm(&one, &ReadOptions::default()).unwrap();
    assert!(rep.index_base_one);
    assert_eq!((ds.indices.to_vec(), ds.features), (vec![0, 2, 1], 3));

    // A file without index 0 may still be declared 0-based.
    let z = ReadOptions {
        index_base: IndexBase::Zero,
        ..ReadOptions::default()
    };
    let (ds, rep) = read_libsvm(&one, &z).unwrap();
    assert!(!rep.index_base_one);
    assert_eq!((ds.indices.to_vec(), ds.features), (vec![1, 3, 2], 4));

    let o = ReadOptions {
        index_base: IndexBase::One,
        ..ReadOptions::default()
    };
    let e = read_libsvm(&zero, &o).unwrap_err();
    assert_eq!(parse_error_at(&e), Some((2, 3)), "{e:?}");

    // The feature count: big enough is kept, too small fails.
    let (ds, _) = read_libsvm(&one, &with_features(100)).unwrap();
    assert_eq!(ds.features, 100);
    let (ds, _) = read_libsvm(&one, &with_features(3)).unwrap();
    assert_eq!(ds.features, 3);
    let e = read_libsvm(&one, &with_features(2)).unwrap_err();
    assert_eq!(parse_error_at(&e), Some((1, 7)), "{e:?}");
    let e = read_libsvm(&zero, &with_features(3)).unwrap_err();
    assert_eq!(parse_error_at(&e), Some((1, 7)), "{e:?}");
}

#[test]
fn tolerated_layout_qid_comments_crlf_tabs() {
    let dir = tmp();
    let text = "# a header line\r\n\
                +1 qid:7 2:0.5 4:1   # trailing comment\r\n\
                \r\n\
                -1\tqid:7\t1:3\t \r\n   \t\n\
                \t 0   3:1e-3  \r\n\
                1.5 4:-0 # no newline at the end";
    let p = put(dir.path(), "layout.svm", text.as_bytes());
    let (ds, rep) = read_libsvm(&p, &ReadOptions::default()).unwrap();
    assert!(rep.index_base_one);
    assert_eq!(ds.labels, vec![1.0, -1.0, 0.0, 1.5]);
    assert_eq!(ds.indptr, vec![0, 2, 3, 4, 5]);
    assert_eq!(ds.indices, vec![1, 3, 0, 2, 3]);
    let v = ds.values.as_ref().unwrap();
    assert_eq!(&v[..4], &[0.5, 1.0, 3.0, 1e-3]);
    assert!(v[4] == 0.0 && v[4].is_sign_negative());
    assert_eq!(ds.features, 4);
    assert_eq!(rep.bytes, text.len() as u64);

    // Line numbers count blank and comment lines.
    let p = put(dir.path(), "l.svm", b"# c\n\n1 1:1\r\n\n1 2:x\n");
    let e = read(&p).unwrap_err();
    assert_eq!(parse_error_at(&e), Some((5, 5)), "{e:?}");
}

#[test]
fn binary_values_drop_the_value_array() {
    let dir = tmp();
    let p = put(dir.path(), "b.svm", b"1 1:1 2:1.0\n0 3:1e0\n");
    assert_eq!(read(&p).unwrap().values, None);
    let p = put(dir.path(), "nb.svm", b"1 1:1 2:1.0\n0 3:2\n");
    assert_eq!(
        read(&p).unwrap().values.as_deref(),
        Some(&[1.0, 1.0, 2.0][..])
    );
}

#[test]
fn a_very_long_line_is_read_whole() {
    let dir = tmp();
    let mut text = String::from("1");
    for i in 1..=400_000u32 {
        text.push_str(&format!(" {i}:0.5"));
    }
    text.push_str("\n-1 7:1\n");
    let p = put(dir.path(), "long.svm", text.as_bytes());
    let ds = read(&p).unwrap();
    assert_eq!(ds.rows(), 2);
    assert_eq!(ds.row(0).nnz(), 400_000);
    assert_eq!(ds.features, 400_000);
}

// ---------------------------------------------------------------- parallel reading

const THREADS: [usize; 4] = [1, 2, 3, 7];

/// Reads `path` on each thread count and checks that the outcomes, errors included, are
/// identical; returns the one outcome.
fn same_on_every_thread_count(
    path: &Path,
    opts: &ReadOptions,
) -> asyb::Result<(Dataset, asyb::data::ReadReport)> {
    let first = read_libsvm_with_threads(path, opts, THREADS[0]);
    for threads in &THREADS[1..] {
        let got = read_libsvm_with_threads(path, opts, *threads);
        assert_eq!(
            format!("{got:?}"),
            format!("{first:?}"),
            "{} on {threads} threads",
            path.display()
        );
    }
    first
}

/// CTR text of a few megabytes, so that the reader cuts it into several pieces.
fn several_pieces_of_ctr(dir: &Path) -> (Dataset, Vec<u8>) {
    let spec = CtrSpec {
        rows: 64_000,
        ..small_ctr(11)
    };
    let ds = ctr(&spec).unwrap();
    let p = dir.join("big.svm");
    write_libsvm(&p, &ds).unwrap();
    let text = std::fs::read(&p).unwrap();
    assert!(text.len() > 3 << 20, "{} bytes", text.len());
    (ds, text)
}

#[test]
fn every_thread_count_reads_the_same_dataset() {
    let dir = tmp();
    let (ds, text) = several_pieces_of_ctr(dir.path());
    let opts = with_features(ds.features);
    let crlf: Vec<u8> = String::from_utf8(text.clone())
        .unwrap()
        .replace('\n', " # c\r\n")
        .into_bytes();
    for (name, bytes, len) in [
        ("plain.svm", text.clone(), text.len()),
        ("crlf.svm", crlf.clone(), crlf.len()),
        ("plain.gz", gz(&text), text.len()),
        ("plain.zst", zst(&text), text.len()),
    ] {
        let p = put(dir.path(), name, &bytes);
        let (back, rep) = same_on_every_thread_count(&p, &opts).unwrap();
        assert_eq!(back, ds, "{name}");
        assert_eq!(rep.rows, ds.rows());
        assert_eq!(rep.bytes, len as u64);
    }
    // The default thread count too.
    let p = put(dir.path(), "again.svm", &text);
    assert_eq!(read_libsvm(&p, &opts).unwrap().0, ds);
}

#[test]
fn the_first_bad_line_in_file_order_wins_on_every_thread_count() {
    let dir = tmp();
    let (ds, text) = several_pieces_of_ctr(dir.path());
    let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    let n = ds.rows();
    // Bad lines late in the file and early in it: the early one is reported.
    let mut bad = Vec::new();
    for (i, line) in lines.iter().enumerate().take(n) {
        match i {
            3 => bad.extend_from_slice(b"1 1:1 1:1"),
            i if i == n - 5 => bad.extend_from_slice(b"1 2:x"),
            _ => bad.extend_from_slice(line),
        }
        bad.push(b'\n');
    }
    for (name, bytes) in [("bad.svm", bad.clone()), ("bad.gz", gz(&bad))] {
        let p = put(dir.path(), name, &bytes);
        let e = same_on_every_thread_count(&p, &ReadOptions::default()).unwrap_err();
        assert_eq!(parse_error_at(&e), Some((4, 7)), "{name}: {e:?}");
        // Skipping: both are counted, the first is named, the rest is read.
        let skip = ReadOptions {
            skip_bad_lines: true,
            ..ReadOptions::default()
        };
        let (back, rep) = same_on_every_thread_count(&p, &skip).unwrap();
        assert_eq!(rep.skipped_lines, 2);
        assert!(rep
            .first_skipped
            .unwrap()
            .contains(":4:7: duplicate feature index 1"));
        assert_eq!(back.rows(), n - 2);
    }
}

#[test]
fn a_late_index_zero_decides_the_base_on_every_thread_count() {
    let dir = tmp();
    let (ds, text) = several_pieces_of_ctr(dir.path());
    let d = ds.features;
    // Rows at the limit early on (fine if the file is 1-based), then, megabytes later,
    // a row with index 0 that makes the file 0-based and those rows out of range.
    let mut t = format!("1 {d}:1\n-1 2:1\n0 1:1 {d}:1\n").into_bytes();
    t.extend_from_slice(&text);
    t.extend_from_slice(format!("1 0:1 {}:1\n", d - 1).as_bytes());
    t.extend_from_slice(format!("1 1:1 {d}:1\n").as_bytes());
    let zero_line = 3 + ds.rows() + 1;
    for (name, bytes) in [("late.svm", t.clone()), ("late.gz", gz(&t))] {
        let p = put(dir.path(), name, &bytes);
        let e = same_on_every_thread_count(&p, &with_features(d)).unwrap_err();
        assert_eq!(parse_error_at(&e), Some((1, 3)), "{e:?}");
        assert!(
            e.to_string().contains(&format!(
                "the file is 0-based since line {zero_line} has index 0"
            )),
            "{e}"
        );
        let skip = ReadOptions {
            skip_bad_lines: true,
            ..with_features(d)
        };
        let (back, rep) = same_on_every_thread_count(&p, &skip).unwrap();
        assert!(!rep.index_base_one);
        // Lines 1, 3, the last one and the generated rows that use the last feature.
        let at_limit = (0..ds.rows())
            .filter(|&i| ds.row(i).indices.last() == Some(&(d as u32 - 1)))
            .count();
        assert!(at_limit > 0);
        assert_eq!(rep.skipped_lines, 3 + at_limit as u64);
        assert_eq!(back.rows(), ds.rows() + 2 - at_limit);
        // Without a feature count nothing is out of range: all rows stay, 0-based.
        let (back, rep) = same_on_every_thread_count(&p, &ReadOptions::default()).unwrap();
        assert!(!rep.index_base_one);
        assert_eq!((back.rows(), back.features), (ds.rows() + 5, d + 1));
    }
}

// ---------------------------------------------------------------- generators

#[test]
fn ctr_is_deterministic_and_shares_the_model_across_row_seeds() {
    let a = ctr(&small_ctr(7)).unwrap();
    let b = ctr(&small_ctr(7)).unwrap();
    let c = ctr(&small_ctr(8)).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.indices, c.indices);
    assert_eq!(
        planted_ctr_support(&small_ctr(7)).unwrap(),
        planted_ctr_support(&small_ctr(8)).unwrap()
    );
    assert_eq!(
        planted_ctr_model(&small_ctr(7)).unwrap(),
        planted_ctr_model(&small_ctr(8)).unwrap()
    );
    let other_model = CtrSpec {
        model_seed: 43,
        ..small_ctr(7)
    };
    assert_ne!(
        planted_ctr_support(&other_model).unwrap(),
        planted_ctr_support(&small_ctr(7)).unwrap()
    );

    // The support: sorted, unique, in range, at most fields * 200 columns, and columns
    // the data actually uses.
    let spec = small_ctr(7);
    let support = planted_ctr_support(&spec).unwrap();
    assert!(support.windows(2).all(|w| w[0] < w[1]));
    assert!(support.iter().all(|&c| (c as usize) < spec.features));
    assert!(support.len() <= spec.fields * 200 && support.len() > spec.fields * 100);
    let used = a
        .indices
        .iter()
        .filter(|c| support.binary_search(c).is_ok())
        .count();
    assert!(
        used * 2 > a.nnz(),
        "frequent values dominate: {used}/{}",
        a.nnz()
    );
}

#[test]
fn ctr_rows_are_well_formed_and_the_positive_rate_holds() {
    let spec = CtrSpec {
        rows: 20_000,
        features: 1 << 16,
        values_per_field: 20_000,
        ..CtrSpec::default()
    };
    let ds = ctr(&spec).unwrap();
    assert_eq!(ds.rows(), 20_000);
    assert!(ds.values.is_none());
    assert_eq!(ds.features, 1 << 16);
    let mut collided = 0;
    for i in 0..ds.rows() {
        let r = ds.row(i).indices;
        assert!(r.len() <= spec.fields && !r.is_empty());
        assert!(r.windows(2).all(|w| w[0] < w[1]), "row {i}");
        assert!(r.iter().all(|&c| (c as usize) < spec.features));
        collided += usize::from(r.len() < spec.fields);
    }
    // With 64Ki columns some rows must show a collision, yet few.
    assert!(collided > 0 && collided < ds.rows() / 5, "{collided}");
    assert!(ds.labels.iter().all(|&y| y == 0.0 || y == 1.0));
    let rate = ds.labels.iter().sum::<f32>() as f64 / ds.rows() as f64;
    assert!((rate - 0.17).abs() < 0.02, "positive rate {rate}");

    let spec = CtrSpec {
        positive_rate: 0.5,
        rows: 5000,
        ..spec
    };
    let ds = ctr(&spec).unwrap();
    let rate = ds.labels.iter().sum::<f32>() as f64 / ds.rows() as f64;
    assert!((rate - 0.5).abs() < 0.03, "positive rate {rate}");
}

#[test]
fn written_generators_match_the_in_memory_ones_byte_for_byte() {
    let dir = tmp();
    let spec = small_ctr(11);
    let streamed = dir.path().join("streamed.svm");
    let via_ds = dir.path().join("via.svm");
    write_ctr(&spec, &streamed).unwrap();
    write_libsvm(&via_ds, &ctr(&spec).unwrap()).unwrap();
    assert_eq!(
        std::fs::read(&streamed).unwrap(),
        std::fs::read(&via_ds).unwrap()
    );
    let text = std::fs::read_to_string(&streamed).unwrap();
    assert!(text
        .lines()
        .all(|l| l.starts_with("0 ") || l.starts_with("1 ")));

    let rspec = small_regression();
    write_regression(&rspec, &streamed).unwrap();
    write_libsvm(&via_ds, &regression(&rspec).unwrap()).unwrap();
    assert_eq!(
        std::fs::read(&streamed).unwrap(),
        std::fs::read(&via_ds).unwrap()
    );

    // A bad spec writes nothing.
    let nothing = dir.path().join("nothing.svm");
    let bad = CtrSpec { fields: 0, ..spec };
    assert!(matches!(
        write_ctr(&bad, &nothing),
        Err(Error::Config { .. })
    ));
    assert!(!nothing.exists());
}

#[test]
fn regression_is_deterministic_and_follows_the_planted_model() {
    let spec = RegressionSpec {
        rows: 3000,
        features: 40,
        nnz_per_row: 8,
        support: 10,
        noise: 0.1,
        ..RegressionSpec::default()
    };
    let ds = regression(&spec).unwrap();
    assert_eq!(ds, regression(&spec).unwrap());
    let other_rows = regression(&RegressionSpec {
        seed: 2,
        ..spec.clone()
    })
    .unwrap();
    assert_ne!(ds.indices, other_rows.indices);
    assert_eq!(
        planted_regression(&spec).unwrap(),
        planted_regression(&RegressionSpec {
            seed: 2,
            ..spec.clone()
        })
        .unwrap()
    );

    let w = planted_regression(&spec).unwrap();
    assert_eq!(w.len(), spec.support);
    assert!(w.windows(2).all(|p| p[0].0 < p[1].0));
    let mut w_dense = vec![0.0f64; spec.features];
    for &(f, x) in &w {
        w_dense[f as usize] = x;
    }
    for i in 0..ds.rows() {
        let r = ds.row(i);
        assert_eq!(r.nnz(), spec.nnz_per_row);
        assert!(r.indices.windows(2).all(|p| p[0] < p[1]));
    }

    // Residual of the planted model ~ the noise level.
    let rms = |w: &[f64]| {
        let s: f64 = (0..ds.rows())
            .map(|i| {
                let pred: f64 = ds
                    .row(i)
                    .iter()
                    .map(|(f, x)| w[f as usize] * x as f64)
                    .sum();
                (ds.labels[i] as f64 - pred).powi(2)
            })
            .sum();
        (s / ds.rows() as f64).sqrt()
    };
    let planted_rms = rms(&w_dense);
    assert!((planted_rms - spec.noise).abs() < 0.01, "rms {planted_rms}");

    // An independent least-squares fit recovers the planted weights, and the labels
    // carry signal: predicting 0 is far worse.
    let fit = least_squares(&ds);
    for f in 0..spec.features {
        assert!(
            (fit[f] - w_dense[f]).abs() < 0.02,
            "feature {f}: {} vs {}",
            fit[f],
            w_dense[f]
        );
    }
    assert!(rms(&fit) <= planted_rms + 1e-9);
    assert!(rms(&vec![0.0; spec.features]) > 5.0 * spec.noise);
}

/// Solves the normal equations (X'X) w = X'y by Gaussian elimination with partial
/// pivoting; small dense problems only.
fn least_squares(ds: &Dataset) -> Vec<f64> {
    let d = ds.features;
    let mut a = vec![vec![0.0f64; d + 1]; d];
    for i in 0..ds.rows() {
        let r: Vec<(u32, f32)> = ds.row(i).iter().collect();
        for &(j, xj) in &r {
            for &(k, xk) in &r {
                a[j as usize][k as usize] += xj as f64 * xk as f64;
            }
            a[j as usize][d] += xj as f64 * ds.labels[i] as f64;
        }
    }
    for c in 0..d {
        let p = (c..d)
            .max_by(|&x, &y| a[x][c].abs().total_cmp(&a[y][c].abs()))
            .unwrap();
        a.swap(c, p);
        let pivot = a[c].clone();
        for (r, row) in a.iter_mut().enumerate() {
            if r != c {
                let f = row[c] / pivot[c];
                for (x, p) in row.iter_mut().zip(&pivot).skip(c) {
                    *x -= f * p;
                }
            }
        }
    }
    (0..d).map(|c| a[c][d] / a[c][c]).collect()
}

/// The fingerprint follows the content: the same rows give the same value whether the
/// arrays are owned or mapped from a cache; one changed label, index or value, or one
/// more feature, changes it.
#[test]
fn fingerprint_follows_the_content() {
    let dir = tmp();
    let ds = ctr(&small_ctr(3)).unwrap();
    let text = dir.path().join("d.svm");
    write_libsvm(&text, &ds).unwrap();
    let cache = dir.path().join("d.cache");
    asyb::data::cache::write_cache(
        &cache,
        &ds,
        None,
        &asyb::data::cache::Source::of(&text, true).unwrap(),
    )
    .unwrap();
    let mapped = asyb::data::cache::read_cache(&cache).unwrap().data;
    assert!(mapped.indices.is_mapped());
    assert_eq!(mapped.fingerprint(), ds.fingerprint());

    let base = ds.fingerprint();
    let mut a = ds.clone();
    a.labels[7] = 1.0 - a.labels[7];
    assert_ne!(a.fingerprint(), base);
    let mut b = ds.clone();
    let last = b.indices.len() - 1;
    b.indices[last] += 1;
    assert_ne!(b.fingerprint(), base);
    let mut c = ds.clone();
    c.features += 1;
    assert_ne!(c.fingerprint(), base);
    let mut d = ds.clone();
    d.values = Some(vec![1.0; d.nnz()].into());
    let base_d = d.fingerprint();
    d.values.as_mut().unwrap()[3] = 2.0;
    assert_ne!(d.fingerprint(), base_d);
}
