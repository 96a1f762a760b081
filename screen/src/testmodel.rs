//! A tiny deterministic ONNX model that tests and benches build themselves:
//! a picture's "redness", "greenness" and "blueness" (each channel's mean
//! minus the mean of the other two). A red frame scores high on `red`, any
//! grey (black, white) zero on all three. Written as ONNX protobuf by hand
//! (a few fields), so no weights and no protobuf library are needed.
//!
//! Graph: `image [1,3,H,W]` -> `ReduceMean(axes 2,3)` -> `[1,3]` ->
//! `MatMul(mix [3,3])` -> `scores [1,3]` (labels `red`, `green`, `blue`).
//!
//! Also here: [`scenes`], camera frames with no person in them, for tests
//! and benches of real models.

use crate::image::Rgb;

/// `width x height` frames a camera could show with no person in them:
/// plain colours, a gradient, a checkerboard, noise.
pub fn scenes(width: u32, height: u32) -> Vec<(&'static str, Rgb)> {
    let mut out: Vec<(&'static str, Rgb)> = [
        ("black", [0, 0, 0]),
        ("white", [255, 255, 255]),
        ("grey", [128, 128, 128]),
        ("red", [220, 40, 40]),
        ("green", [40, 200, 80]),
        ("blue", [40, 70, 230]),
        ("yellow", [235, 215, 40]),
    ]
    .into_iter()
    .map(|(name, c)| (name, Rgb::solid(width, height, c)))
    .collect();
    let mut gradient = Rgb::solid(width, height, [0, 0, 0]);
    let mut checks = gradient.clone();
    let mut noise = gradient.clone();
    let mut seed = 0x2545_f491_u32;
    let (wm, hm) = (width.max(2) - 1, height.max(2) - 1);
    for y in 0..height {
        for x in 0..width {
            let i = ((y * width + x) * 3) as usize;
            gradient.data[i..i + 3].copy_from_slice(&[(x * 255 / wm) as u8, (y * 255 / hm) as u8, 96]);
            let on = ((x / 40) + (y / 40)) % 2 == 0;
            checks.data[i..i + 3].copy_from_slice(if on { &[240, 240, 240] } else { &[20, 30, 60] });
            for c in 0..3 {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                noise.data[i + c] = (seed >> 24) as u8;
            }
        }
    }
    out.extend([("gradient", gradient), ("checkerboard", checks), ("noise", noise)]);
    out
}

/// The config that goes with [`colour_model`] (`review` and `high` are the
/// thresholds of the `red` category).
pub fn colour_config(width: u32, height: u32, review: f32, high: f32) -> String {
    format!(
        r#"id = "colour-test"
[input]
width = {width}
height = {height}
layout = "nchw"
[output]
kind = "classifier"
labels = ["red", "green", "blue"]
[[category]]
name = "red"
labels = ["red"]
review = {review}
high = {high}
report_category = "other"
"#
    )
}

/// The ONNX file's bytes.
pub fn colour_model() -> Vec<u8> {
    let mix: [f32; 9] = [1.0, -0.5, -0.5, -0.5, 1.0, -0.5, -0.5, -0.5, 1.0];
    let raw: Vec<u8> = mix.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut initializer = Vec::new();
    field_varint(&mut initializer, 1, 3); // dims
    field_varint(&mut initializer, 1, 3);
    field_varint(&mut initializer, 2, 1); // data_type FLOAT
    field_bytes(&mut initializer, 8, b"mix"); // name
    field_bytes(&mut initializer, 9, &raw); // raw_data

    let mut reduce = Vec::new();
    field_bytes(&mut reduce, 1, b"image");
    field_bytes(&mut reduce, 2, b"means");
    field_bytes(&mut reduce, 3, b"reduce");
    field_bytes(&mut reduce, 4, b"ReduceMean");
    field_bytes(&mut reduce, 5, &attr_ints("axes", &[2, 3]));
    field_bytes(&mut reduce, 5, &attr_int("keepdims", 0));

    let mut matmul = Vec::new();
    field_bytes(&mut matmul, 1, b"means");
    field_bytes(&mut matmul, 1, b"mix");
    field_bytes(&mut matmul, 2, b"scores");
    field_bytes(&mut matmul, 3, b"mix_channels");
    field_bytes(&mut matmul, 4, b"MatMul");

    let mut graph = Vec::new();
    field_bytes(&mut graph, 1, &reduce);
    field_bytes(&mut graph, 1, &matmul);
    field_bytes(&mut graph, 2, b"colour");
    field_bytes(&mut graph, 5, &initializer);
    field_bytes(
        &mut graph,
        11,
        &value_info(
            "image",
            &[Dim::Value(1), Dim::Value(3), Dim::Param("h"), Dim::Param("w")],
        ),
    );
    field_bytes(
        &mut graph,
        12,
        &value_info("scores", &[Dim::Value(1), Dim::Value(3)]),
    );

    let mut opset = Vec::new();
    field_bytes(&mut opset, 1, b"");
    field_varint(&mut opset, 2, 13);

    let mut model = Vec::new();
    field_varint(&mut model, 1, 7); // ir_version
    field_bytes(&mut model, 2, b"duet tests"); // producer_name
    field_bytes(&mut model, 7, &graph);
    field_bytes(&mut model, 8, &opset);
    model
}

enum Dim {
    Value(u64),
    Param(&'static str),
}

fn value_info(name: &str, dims: &[Dim]) -> Vec<u8> {
    let mut shape = Vec::new();
    for d in dims {
        let mut dim = Vec::new();
        match d {
            Dim::Value(v) => field_varint(&mut dim, 1, *v),
            Dim::Param(p) => field_bytes(&mut dim, 2, p.as_bytes()),
        }
        field_bytes(&mut shape, 1, &dim);
    }
    let mut tensor = Vec::new();
    field_varint(&mut tensor, 1, 1); // elem_type FLOAT
    field_bytes(&mut tensor, 2, &shape);
    let mut ty = Vec::new();
    field_bytes(&mut ty, 1, &tensor);
    let mut info = Vec::new();
    field_bytes(&mut info, 1, name.as_bytes());
    field_bytes(&mut info, 2, &ty);
    info
}

fn attr_ints(name: &str, ints: &[u64]) -> Vec<u8> {
    let mut a = Vec::new();
    field_bytes(&mut a, 1, name.as_bytes());
    for i in ints {
        field_varint(&mut a, 8, *i);
    }
    field_varint(&mut a, 20, 7); // AttributeType INTS
    a
}

fn attr_int(name: &str, i: u64) -> Vec<u8> {
    let mut a = Vec::new();
    field_bytes(&mut a, 1, name.as_bytes());
    field_varint(&mut a, 3, i);
    field_varint(&mut a, 20, 2); // AttributeType INT
    a
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn field_varint(out: &mut Vec<u8>, field: u64, v: u64) {
    varint(out, field << 3);
    varint(out, v);
}

fn field_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    varint(out, (field << 3) | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;
    use crate::image::{encode_webp_lossless, Rgb};
    use crate::model::Model;
    use proto::screen_api::Level;

    fn load() -> (Model, tempdir::Dir) {
        let dir = tempdir::Dir::new("colour");
        let path = dir.path().join("colour.onnx");
        std::fs::write(&path, colour_model()).unwrap();
        let config = ModelConfig::parse(&colour_config(32, 24, 0.5, 0.6)).unwrap();
        (Model::load(&path, config).unwrap(), dir)
    }

    #[test]
    fn the_colour_model_scores_a_red_frame_high_and_grey_frames_zero() {
        let (model, _dir) = load();
        let red = encode_webp_lossless(&Rgb::solid(64, 48, [220, 40, 40])).unwrap();
        let s = model.screen(&red).unwrap();
        assert!((s.labels[0] - (180.0 / 255.0)).abs() < 1e-3, "{:?}", s.labels);
        assert_eq!(s.scores[0].level, Level::High);
        for grey in [[0, 0, 0], [255, 255, 255], [128, 128, 128]] {
            let w = encode_webp_lossless(&Rgb::solid(64, 48, grey)).unwrap();
            let s = model.screen(&w).unwrap();
            assert!(
                s.labels.iter().all(|l| l.abs() < 1e-3),
                "{grey:?}: {:?}",
                s.labels
            );
            assert_eq!(s.scores[0].level, Level::Clear);
        }
    }

    #[test]
    fn a_model_whose_output_does_not_fit_the_config_is_refused_at_load() {
        let dir = tempdir::Dir::new("colour-mismatch");
        let path = dir.path().join("colour.onnx");
        std::fs::write(&path, colour_model()).unwrap();
        let text = colour_config(32, 24, 0.5, 0.6).replace(
            "labels = [\"red\", \"green\", \"blue\"]",
            "labels = [\"red\", \"green\", \"blue\", \"violet\"]",
        );
        let config = ModelConfig::parse(&text).unwrap();
        let e = Model::load(&path, config).unwrap_err().to_string();
        assert!(e.contains("does not fit"), "{e}");
    }

    #[test]
    fn a_file_that_is_not_onnx_is_a_load_error() {
        let dir = tempdir::Dir::new("colour-garbage");
        let path = dir.path().join("garbage.onnx");
        std::fs::write(&path, b"not a model").unwrap();
        let config = ModelConfig::parse(&colour_config(32, 24, 0.5, 0.6)).unwrap();
        assert!(matches!(
            Model::load(&path, config),
            Err(crate::error::ModelError::Load { .. })
        ));
    }

    /// A scratch folder removed on drop.
    mod tempdir {
        pub struct Dir(std::path::PathBuf);
        impl Dir {
            pub fn new(name: &str) -> Self {
                let p = std::env::temp_dir().join(format!("duet-screen-{name}-{}", std::process::id()));
                std::fs::create_dir_all(&p).unwrap();
                Self(p)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}
