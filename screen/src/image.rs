//! From a snapshot (a WebP file: the SFU wraps each VP8 keyframe as one) to
//! the model's input values: decode in pure Rust (`image-webp`), resize
//! (bilinear with pixel centres, as OpenCV's `INTER_LINEAR` that models are
//! usually trained with), optional letterbox with edge padding, channel
//! order, normalisation and layout.

use crate::config::{ChannelOrder, InputConfig, Layout, Resize};
use crate::error::SampleError;
use std::io::Cursor;

/// Largest snapshot side decoded (VP8's own limit is 16383).
pub const MAX_SIDE: u32 = 4096;

/// A decoded picture, 8-bit RGB, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rgb {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl Rgb {
    /// One colour all over (tests, benches).
    pub fn solid(width: u32, height: u32, rgb: [u8; 3]) -> Self {
        let data = rgb
            .iter()
            .copied()
            .cycle()
            .take((width * height * 3) as usize)
            .collect();
        Self { width, height, data }
    }

    fn at(&self, x: u32, y: u32) -> [f32; 3] {
        let i = ((y * self.width + x) * 3) as usize;
        [
            f32::from(self.data[i]),
            f32::from(self.data[i + 1]),
            f32::from(self.data[i + 2]),
        ]
    }
}

/// Decodes a WebP file (lossy or lossless) to RGB.
pub fn decode_webp(bytes: &[u8]) -> Result<Rgb, SampleError> {
    let err = |e: image_webp::DecodingError| SampleError::Decode(e.to_string());
    let mut d = image_webp::WebPDecoder::new(Cursor::new(bytes)).map_err(err)?;
    let (width, height) = d.dimensions();
    if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
        return Err(SampleError::Decode(format!("{width}x{height} is out of range")));
    }
    let size = d
        .output_buffer_size()
        .ok_or_else(|| SampleError::Decode("image too large".into()))?;
    let mut buf = vec![0u8; size];
    d.read_image(&mut buf).map_err(err)?;
    let data = if d.has_alpha() {
        buf.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect()
    } else {
        buf
    };
    Ok(Rgb { width, height, data })
}

/// Where the picture lands inside the model input.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Placement {
    /// Scale from input pixels to picture pixels, per axis.
    sx: f32,
    sy: f32,
    /// Top-left of the scaled picture in the input.
    left: f32,
    top: f32,
    /// Size of the scaled picture in the input.
    w: f32,
    h: f32,
}

fn placement(src: &Rgb, c: &InputConfig) -> Placement {
    let (iw, ih) = (c.width as f32, c.height as f32);
    let (pw, ph) = (src.width as f32, src.height as f32);
    match c.resize {
        Resize::Stretch => Placement {
            sx: pw / iw,
            sy: ph / ih,
            left: 0.0,
            top: 0.0,
            w: iw,
            h: ih,
        },
        Resize::Letterbox => {
            let scale = (iw / pw).min(ih / ph);
            let (w, h) = ((pw * scale).floor().max(1.0), (ph * scale).floor().max(1.0));
            Placement {
                sx: pw / w,
                sy: ph / h,
                left: ((iw - w) / 2.0).floor(),
                top: ((ih - h) / 2.0).floor(),
                w,
                h,
            }
        }
    }
}

/// Bilinear sample at input pixel `(x, y)`; outside the placed picture the
/// nearest edge pixel (letterbox edge padding).
fn sample(src: &Rgb, p: &Placement, x: u32, y: u32) -> [f32; 3] {
    let lx = (x as f32 - p.left).clamp(0.0, p.w - 1.0);
    let ly = (y as f32 - p.top).clamp(0.0, p.h - 1.0);
    let fx = ((lx + 0.5) * p.sx - 0.5).clamp(0.0, (src.width - 1) as f32);
    let fy = ((ly + 0.5) * p.sy - 0.5).clamp(0.0, (src.height - 1) as f32);
    let (x0, y0) = (fx.floor() as u32, fy.floor() as u32);
    let (x1, y1) = ((x0 + 1).min(src.width - 1), (y0 + 1).min(src.height - 1));
    let (ax, ay) = (fx - x0 as f32, fy - y0 as f32);
    let (p00, p10, p01, p11) = (src.at(x0, y0), src.at(x1, y0), src.at(x0, y1), src.at(x1, y1));
    std::array::from_fn(|i| {
        let top = p00[i] + (p10[i] - p00[i]) * ax;
        let bottom = p01[i] + (p11[i] - p01[i]) * ax;
        top + (bottom - top) * ay
    })
}

/// The model input for `src`: `width * height * 3` values in the config's
/// layout, channel order and normalisation.
pub fn to_input(src: &Rgb, c: &InputConfig) -> Vec<f32> {
    let (w, h) = (c.width as usize, c.height as usize);
    let plane = w * h;
    let mut out = vec![0f32; plane * 3];
    let p = placement(src, c);
    let order = match c.channels {
        ChannelOrder::Rgb => [0, 1, 2],
        ChannelOrder::Bgr => [2, 1, 0],
    };
    for y in 0..h {
        for x in 0..w {
            let px = sample(src, &p, x as u32, y as u32);
            for (k, &ch) in order.iter().enumerate() {
                let v = (px[ch] / 255.0 * c.range - c.mean[k]) / c.std[k];
                let at = match c.layout {
                    Layout::Nchw => k * plane + y * w + x,
                    Layout::Nhwc => (y * w + x) * 3 + k,
                };
                out[at] = v;
            }
        }
    }
    out
}

/// Encodes `img` as a lossless WebP (tests and benches make snapshots with it;
/// the SFU's are lossy VP8, which [`decode_webp`] reads the same way).
pub fn encode_webp_lossless(img: &Rgb) -> Result<Vec<u8>, SampleError> {
    let mut out = Vec::new();
    image_webp::WebPEncoder::new(&mut out)
        .encode(&img.data, img.width, img.height, image_webp::ColorType::Rgb8)
        .map_err(|e| SampleError::Decode(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(w: u32, h: u32, layout: Layout, resize: Resize) -> InputConfig {
        InputConfig {
            width: w,
            height: h,
            layout,
            channels: ChannelOrder::Rgb,
            resize,
            range: 1.0,
            mean: [0.0; 3],
            std: [1.0; 3],
        }
    }

    #[test]
    fn a_webp_snapshot_round_trips_through_decode() {
        let img = Rgb::solid(64, 48, [200, 30, 10]);
        let back = decode_webp(&encode_webp_lossless(&img).unwrap()).unwrap();
        assert_eq!(back, img);
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_panic() {
        for bytes in [&b""[..], b"RIFF\x10\0\0\0WEBPVP8 ", &[0xff; 64]] {
            assert!(matches!(decode_webp(bytes), Err(SampleError::Decode(_))));
        }
    }

    #[test]
    fn a_solid_picture_gives_its_normalised_colour_in_every_layout() {
        let img = Rgb::solid(40, 30, [255, 0, 51]);
        for layout in [Layout::Nchw, Layout::Nhwc] {
            let v = to_input(&img, &input(8, 8, layout, Resize::Letterbox));
            assert_eq!(v.len(), 8 * 8 * 3);
            let (r, g, b) = match layout {
                Layout::Nchw => (v[0], v[64], v[128]),
                Layout::Nhwc => (v[0], v[1], v[2]),
            };
            assert!((r - 1.0).abs() < 1e-6 && g.abs() < 1e-6 && (b - 0.2).abs() < 1e-6);
        }
    }

    #[test]
    fn bgr_and_mean_std_are_applied_per_channel() {
        let img = Rgb::solid(4, 4, [255, 0, 0]);
        let mut c = input(2, 2, Layout::Nhwc, Resize::Stretch);
        c.channels = ChannelOrder::Bgr;
        c.mean = [0.5, 0.5, 0.5];
        c.std = [0.5, 0.5, 0.5];
        let v = to_input(&img, &c);
        // B, G, R: (0 - .5) / .5, (0 - .5) / .5, (1 - .5) / .5
        assert_eq!(&v[..3], &[-1.0, -1.0, 1.0]);
    }

    #[test]
    fn letterbox_pads_with_the_edge_pixels_and_keeps_the_aspect_ratio() {
        // Left half black, right half white, 4:1 wide, into a square.
        let mut img = Rgb::solid(40, 10, [0, 0, 0]);
        for y in 0..10 {
            for x in 20..40 {
                let i = ((y * 40 + x) * 3) as usize;
                img.data[i..i + 3].copy_from_slice(&[255, 255, 255]);
            }
        }
        let v = to_input(&img, &input(20, 20, Layout::Nchw, Resize::Letterbox));
        // Top-left corner is padding from the black edge, top-right from the white one.
        assert_eq!(v[0], 0.0);
        assert_eq!(v[19], 1.0);
        // Stretched instead, the same corners keep their colours too.
        let s = to_input(&img, &input(20, 20, Layout::Nchw, Resize::Stretch));
        assert_eq!((s[0], s[19]), (0.0, 1.0));
    }
}
