//! `thumbnail`: shrink a JPEG or PNG image to fit a box, preserving its aspect ratio.
//!
//! Payload: `{"input_path", "width": 1..=4096, "height": 1..=4096, "output_path"?}`.
//!
//! - The image is scaled down to the largest size that fits inside `width`×`height` with the
//!   same aspect ratio (each side rounded to the nearest pixel, at least 1). It is **never
//!   upscaled**: an image that already fits keeps its size (as Pillow's `thumbnail()`). EXIF
//!   orientation of JPEGs is applied first.
//! - The output goes to `output_path` (inside the data dir; its extension `.jpg`, `.jpeg` or
//!   `.png` picks the format) or by default to `thumbnails/<stem>_<width>x<height>.<ext>`, where
//!   `<width>x<height>` is the requested box and the format is the input's.
//! - Result: `{"output_path": path relative to the data dir, "width", "height"` (the ACTUAL
//!   output size)`, "original_width", "original_height"}`.
//! - Decompression bombs are refused before decoding: the header's dimensions are checked
//!   against [`ImageLimits::max_dimension`] and the decoded size against
//!   [`ImageLimits::max_alloc`] (the decoders enforce the same limits).
//!
//! All input problems (missing file, not an image, too large, sandbox violations) are fatal.

use crate::payload::{self, field, get, invalid, kind};
use crate::sandbox::write_atomically;
use crate::{DataDir, FieldError, JobContext, JobError, JobHandler, RunOutput};
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::{
    DynamicImage, GenericImageView, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits,
    metadata::Orientation,
};
use serde_json::{Value, json};
use std::fs::File;
use std::io::{BufReader, Write};
use std::path::Path;

/// Largest accepted `width` / `height` of the box.
pub const MAX_BOX: u32 = 4096;
/// JPEG output quality.
pub const JPEG_QUALITY: u8 = 90;

/// Decompression-bomb guards applied to every input image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Largest accepted input width and height, in pixels.
    pub max_dimension: u32,
    /// Largest accepted decoded image size, in bytes.
    pub max_alloc: u64,
}

impl Default for ImageLimits {
    /// 16384 pixels per side, 256 MiB decoded.
    fn default() -> Self {
        ImageLimits {
            max_dimension: 16_384,
            max_alloc: 256 * 1024 * 1024,
        }
    }
}

/// The `thumbnail` job type.
#[derive(Debug, Clone, Copy, Default)]
pub struct ThumbnailJob {
    limits: ImageLimits,
}

impl ThumbnailJob {
    /// A handler with custom decoding limits.
    pub fn with_limits(limits: ImageLimits) -> Self {
        ThumbnailJob { limits }
    }

    /// The decoding limits in force.
    pub fn limits(&self) -> ImageLimits {
        self.limits
    }
}

struct Params {
    input: String,
    width: u32,
    height: u32,
    output: Option<String>,
}

fn box_side(obj: &serde_json::Map<String, Value>, key: &str, errors: &mut Vec<FieldError>) -> u32 {
    let msg = |got: String| format!("must be an integer from 1 to {MAX_BOX} (pixels), got {got}");
    match get(obj, key) {
        None => {
            errors.push(FieldError::new(
                field(key),
                msg("nothing (it is required)".into()),
            ));
            0
        }
        Some(v) => match v.as_u64() {
            Some(n) if (1..=u64::from(MAX_BOX)).contains(&n) => n as u32,
            _ => {
                let got = if v.is_number() {
                    v.to_string()
                } else {
                    kind(v).to_string()
                };
                errors.push(FieldError::new(field(key), msg(got)));
                0
            }
        },
    }
}

/// Output format chosen by a path's extension (JPEG or PNG only).
fn format_of_extension(path: &str) -> Option<ImageFormat> {
    let ext = Path::new(path).extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "jpg" | "jpeg" => Some(ImageFormat::Jpeg),
        "png" => Some(ImageFormat::Png),
        _ => None,
    }
}

fn parse(payload: &Value, data_dir: &DataDir) -> Result<Params, Vec<FieldError>> {
    let obj = payload::object(payload)?;
    let mut errors = Vec::new();
    let input = payload::path(obj, "input_path", true, data_dir, &mut errors);
    let width = box_side(obj, "width", &mut errors);
    let height = box_side(obj, "height", &mut errors);
    let output = payload::path(obj, "output_path", false, data_dir, &mut errors);
    if let Some(out) = &output
        && format_of_extension(out).is_none()
    {
        errors.push(FieldError::new(
            field("output_path"),
            "must end in .jpg, .jpeg or .png (the extension chooses the output format)",
        ));
    }
    match input {
        Some(input) if errors.is_empty() => Ok(Params {
            input,
            width,
            height,
            output,
        }),
        _ => Err(errors),
    }
}

/// The largest size with the aspect ratio of `w`×`h` that fits in `bw`×`bh`, never larger than
/// the original. Sides are rounded to the nearest pixel and are at least 1.
pub fn fit(w: u32, h: u32, bw: u32, bh: u32) -> (u32, u32) {
    if w <= bw && h <= bh {
        return (w, h);
    }
    let (w64, h64, bw64, bh64) = (u64::from(w), u64::from(h), u64::from(bw), u64::from(bh));
    // Round-half-up of a/b for positive integers.
    let div_round = |a: u64, b: u64| (2 * a + b) / (2 * b);
    if bw64 * h64 <= bh64 * w64 {
        // Width is the binding side.
        let nh = div_round(h64 * bw64, w64).clamp(1, bh64);
        (bw, nh as u32)
    } else {
        let nw = div_round(w64 * bh64, h64).clamp(1, bw64);
        (nw as u32, bh)
    }
}

impl ThumbnailJob {
    fn decode(
        &self,
        path: &Path,
        user_path: &str,
    ) -> Result<(DynamicImage, ImageFormat), JobError> {
        let limits = self.limits;
        let file =
            File::open(path).map_err(|e| JobError::io(format!("opening `{user_path}`"), e))?;
        let mut reader = ImageReader::new(BufReader::new(file))
            .with_guessed_format()
            .map_err(|e| JobError::io(format!("reading `{user_path}`"), e))?;
        let format = match reader.format() {
            Some(f @ (ImageFormat::Jpeg | ImageFormat::Png)) => f,
            _ => {
                return Err(JobError::Fatal(format!(
                    "`{user_path}` is not a JPEG or PNG image; thumbnail supports JPEG and PNG \
                     input"
                )));
            }
        };
        // Read the header first with only the allocation limit, so that oversized dimensions
        // are reported with their values; then install the full limits on the decoder.
        let mut header_limits = Limits::default();
        header_limits.max_alloc = Some(limits.max_alloc);
        let mut full_limits = header_limits.clone();
        full_limits.max_image_width = Some(limits.max_dimension);
        full_limits.max_image_height = Some(limits.max_dimension);
        reader.limits(header_limits);
        let image_err = |e| image_error(e, user_path, limits);
        let mut decoder = reader.into_decoder().map_err(image_err)?;
        let (w, h) = decoder.dimensions();
        if w > limits.max_dimension || h > limits.max_dimension {
            return Err(too_large(user_path, limits, &format!("{w}×{h} pixels")));
        }
        let bytes = decoder.total_bytes();
        if bytes > limits.max_alloc {
            return Err(too_large(
                user_path,
                limits,
                &format!(
                    "{w}×{h} pixels, {} MiB decoded",
                    bytes.div_ceil(1024 * 1024)
                ),
            ));
        }
        decoder.set_limits(full_limits).map_err(image_err)?;
        let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
        let mut img = DynamicImage::from_decoder(decoder).map_err(image_err)?;
        img.apply_orientation(orientation);
        Ok((img, format))
    }
}

fn too_large(user_path: &str, limits: ImageLimits, what: &str) -> JobError {
    JobError::Fatal(format!(
        "image `{user_path}` is too large ({what}); the limits are {max}×{max} pixels and {mib} MiB \
         decoded (decompression-bomb guard); shrink the image first",
        max = limits.max_dimension,
        mib = limits.max_alloc / (1024 * 1024)
    ))
}

fn image_error(e: ImageError, user_path: &str, limits: ImageLimits) -> JobError {
    match e {
        ImageError::IoError(io) => JobError::io(format!("reading `{user_path}`"), io),
        ImageError::Limits(l) => too_large(user_path, limits, &l.to_string()),
        other => JobError::Fatal(format!(
            "cannot decode `{user_path}`: {other}; give a valid JPEG or PNG image"
        )),
    }
}

fn encode(
    img: &DynamicImage,
    format: ImageFormat,
    w: &mut impl Write,
    shown: &str,
) -> Result<(), JobError> {
    let result = match format {
        ImageFormat::Jpeg => {
            let enc = JpegEncoder::new_with_quality(w, JPEG_QUALITY);
            match img {
                DynamicImage::ImageLuma8(_) => img.write_with_encoder(enc),
                _ => DynamicImage::ImageRgb8(img.to_rgb8()).write_with_encoder(enc),
            }
        }
        _ => match img {
            DynamicImage::ImageRgb32F(_) | DynamicImage::ImageRgba32F(_) => {
                DynamicImage::ImageRgba16(img.to_rgba16()).write_with_encoder(PngEncoder::new(w))
            }
            _ => img.write_with_encoder(PngEncoder::new(w)),
        },
    };
    result.map_err(|e| match e {
        ImageError::IoError(io) => JobError::io(format!("writing `{shown}`"), io),
        other => JobError::Fatal(format!("cannot encode `{shown}`: {other}")),
    })
}

/// `thumbnails/<stem>_<w>x<h>.<ext>`, keeping the input's extension when it names its format.
fn default_output(input: &str, format: ImageFormat, bw: u32, bh: u32) -> String {
    let p = Path::new(input);
    let stem = p
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    let ext = match p.extension().and_then(|e| e.to_str()) {
        Some(e) if format_of_extension(input) == Some(format) => e.to_string(),
        _ => format.extensions_str()[0].to_string(),
    };
    format!("thumbnails/{stem}_{bw}x{bh}.{ext}")
}

impl JobHandler for ThumbnailJob {
    fn name(&self) -> &'static str {
        "thumbnail"
    }

    fn preemptible(&self) -> bool {
        false
    }

    fn validate(&self, payload: &Value, data_dir: &DataDir) -> Vec<FieldError> {
        parse(payload, data_dir).err().unwrap_or_default()
    }

    fn run(&self, payload: &Value, ctx: &JobContext) -> Result<RunOutput, JobError> {
        let p = parse(payload, &ctx.data_dir).map_err(invalid)?;
        let input = ctx.data_dir.resolve_existing(&p.input)?;
        let (img, in_format) = self.decode(&input, &p.input)?;
        let (ow, oh) = img.dimensions();
        let (tw, th) = fit(ow, oh, p.width, p.height);
        let thumb = if (tw, th) == (ow, oh) {
            img
        } else {
            img.thumbnail_exact(tw, th)
        };
        let (user_out, out_format) = match &p.output {
            Some(out) => (out.clone(), format_of_extension(out).unwrap_or(in_format)),
            None => (
                default_output(&p.input, in_format, p.width, p.height),
                in_format,
            ),
        };
        let target = ctx.data_dir.resolve_new(&user_out)?;
        write_atomically(&target, |w| encode(&thumb, out_format, w, &user_out))?;
        Ok(RunOutput::Done(json!({
            "output_path": ctx.data_dir.display_relative(&target),
            "width": thumb.width(),
            "height": thumb.height(),
            "original_width": ow,
            "original_height": oh,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Rgba};

    const SAMPLE: &str = "/work/shared/seed/sample_data/sample.jpg";

    fn setup() -> (tempfile::TempDir, JobContext) {
        let t = tempfile::tempdir().unwrap();
        let c = JobContext::new(DataDir::new(t.path().join("data")).unwrap());
        std::fs::copy(SAMPLE, c.data_dir.root().join("sample.jpg")).unwrap();
        (t, c)
    }

    fn done(r: Result<RunOutput, JobError>) -> Value {
        match r.unwrap() {
            RunOutput::Done(v) => v,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn fit_keeps_aspect_and_never_upscales() {
        assert_eq!(fit(800, 600, 128, 128), (128, 96));
        assert_eq!(fit(600, 800, 128, 128), (96, 128));
        assert_eq!(fit(300, 100, 50, 50), (50, 17));
        assert_eq!(fit(10, 10, 100, 100), (10, 10));
        assert_eq!(fit(10_000, 1, 100, 100), (100, 1));
        assert_eq!(fit(800, 600, 4096, 4096), (800, 600));
        assert_eq!(fit(1000, 500, 100, 10), (20, 10));
    }

    #[test]
    fn sample_jpeg_to_default_output() {
        let (_t, c) = setup();
        let v = done(ThumbnailJob::default().run(
            &json!({"input_path": "sample.jpg", "width": 128, "height": 128}),
            &c,
        ));
        assert_eq!(
            v,
            json!({"output_path": "thumbnails/sample_128x128.jpg", "width": 128, "height": 96,
                   "original_width": 800, "original_height": 600})
        );
        let out = c.data_dir.root().join("thumbnails/sample_128x128.jpg");
        let decoded = image::open(&out).unwrap();
        assert_eq!(decoded.dimensions(), (128, 96));
        assert_eq!(
            image::ImageFormat::from_path(&out).unwrap(),
            ImageFormat::Jpeg
        );
        assert_eq!(
            ImageReader::open(&out)
                .unwrap()
                .with_guessed_format()
                .unwrap()
                .format(),
            Some(ImageFormat::Jpeg)
        );
    }

    #[test]
    fn png_with_alpha_to_explicit_output_and_absolute_input() {
        let (_t, c) = setup();
        let img: ImageBuffer<Rgba<u8>, _> =
            ImageBuffer::from_fn(300, 100, |x, _| Rgba([(x % 256) as u8, 0, 0, 128]));
        img.save(c.data_dir.root().join("wide.png")).unwrap();
        let abs_in = c.data_dir.root().join("wide.png");
        let v = done(ThumbnailJob::default().run(
            &json!({"input_path": abs_in.to_str().unwrap(), "width": 50, "height": 50,
                    "output_path": "out/small.png"}),
            &c,
        ));
        assert_eq!(v["output_path"], "out/small.png");
        assert_eq!(
            (v["width"].as_u64(), v["height"].as_u64()),
            (Some(50), Some(17))
        );
        let decoded = image::open(c.data_dir.root().join("out/small.png")).unwrap();
        assert_eq!(decoded.dimensions(), (50, 17));
        assert!(decoded.color().has_alpha());
        // Convert PNG with alpha to JPEG through the output extension.
        let v = done(ThumbnailJob::default().run(
            &json!({"input_path": "wide.png", "width": 30, "height": 30,
                    "output_path": "out/small.JPEG"}),
            &c,
        ));
        assert_eq!(
            (v["width"].as_u64(), v["height"].as_u64()),
            (Some(30), Some(10))
        );
        let decoded = image::open(c.data_dir.root().join("out/small.JPEG")).unwrap();
        assert_eq!(decoded.dimensions(), (30, 10));
    }

    #[test]
    fn small_image_is_not_upscaled() {
        let (_t, c) = setup();
        let img: ImageBuffer<Rgba<u8>, _> = ImageBuffer::from_pixel(10, 8, Rgba([1, 2, 3, 255]));
        img.save(c.data_dir.root().join("tiny.png")).unwrap();
        let v = done(ThumbnailJob::default().run(
            &json!({"input_path": "tiny.png", "width": 100, "height": 100}),
            &c,
        ));
        assert_eq!(
            v,
            json!({"output_path": "thumbnails/tiny_100x100.png", "width": 10, "height": 8,
                   "original_width": 10, "original_height": 8})
        );
        let decoded = image::open(c.data_dir.root().join("thumbnails/tiny_100x100.png")).unwrap();
        assert_eq!(decoded.dimensions(), (10, 8));
    }

    #[test]
    fn output_escapes_are_refused() {
        let (t, c) = setup();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, c.data_dir.root().join("esc")).unwrap();
        std::os::unix::fs::symlink(outside.join("x.jpg"), c.data_dir.root().join("l.jpg")).unwrap();
        let abs = outside.join("o.jpg");
        for out in ["../o.jpg", abs.to_str().unwrap(), "esc/o.jpg", "l.jpg"] {
            let err = ThumbnailJob::default()
                .run(
                    &json!({"input_path": "sample.jpg", "width": 10, "height": 10,
                            "output_path": out}),
                    &c,
                )
                .unwrap_err();
            assert!(!err.is_retryable(), "{out}: {err}");
            assert!(
                err.to_string().contains("JOBSCHED_DATA_DIR"),
                "{out}: {err}"
            );
        }
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        assert!(!outside.join("x.jpg").exists());
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    }

    /// A tiny PNG whose header claims `w`×`h` RGBA pixels.
    fn bomb_png(w: u32, h: u32) -> Vec<u8> {
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&w.to_be_bytes());
        ihdr.extend_from_slice(&h.to_be_bytes());
        ihdr.extend_from_slice(&[8, 6, 0, 0, 0]); // 8-bit RGBA, deflate, no interlace
        chunk(&mut png, b"IHDR", &ihdr);
        chunk(
            &mut png,
            b"IDAT",
            &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
        );
        chunk(&mut png, b"IEND", &[]);
        png
    }

    #[test]
    fn crc_is_right() {
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
    }

    #[test]
    fn decompression_bombs_are_refused() {
        let (_t, c) = setup();
        let root = c.data_dir.root();
        // Huge dimensions in the header.
        std::fs::write(root.join("bomb.png"), bomb_png(100_000, 100_000)).unwrap();
        // Within the side limit but over the allocation limit (16000² × 4 bytes ≈ 977 MiB).
        std::fs::write(root.join("wide.png"), bomb_png(16_000, 16_000)).unwrap();
        for (name, detail) in [
            ("bomb.png", "100000×100000 pixels"),
            ("wide.png", "977 MiB decoded"),
        ] {
            let err = ThumbnailJob::default()
                .run(&json!({"input_path": name, "width": 10, "height": 10}), &c)
                .unwrap_err();
            assert!(!err.is_retryable(), "{name}: {err}");
            let msg = err.to_string();
            assert!(
                msg.contains("too large") && msg.contains(detail),
                "{name}: {msg}"
            );
        }
        // Small limits reject the 800×600 sample (JPEG path).
        let strict = ThumbnailJob::with_limits(ImageLimits {
            max_dimension: 500,
            max_alloc: 1 << 30,
        });
        let err = strict
            .run(
                &json!({"input_path": "sample.jpg", "width": 10, "height": 10}),
                &c,
            )
            .unwrap_err();
        assert!(
            !err.is_retryable() && err.to_string().contains("800×600"),
            "{err}"
        );
        let strict = ThumbnailJob::with_limits(ImageLimits {
            max_dimension: 16_384,
            max_alloc: 1_000_000,
        });
        let err = strict
            .run(
                &json!({"input_path": "sample.jpg", "width": 10, "height": 10}),
                &c,
            )
            .unwrap_err();
        assert!(
            !err.is_retryable() && err.to_string().contains("too large"),
            "{err}"
        );
        assert!(!root.join("thumbnails").exists());
    }

    #[test]
    fn bad_inputs_are_fatal() {
        let (_t, c) = setup();
        std::fs::write(c.data_dir.root().join("fake.jpg"), "not an image").unwrap();
        std::fs::write(
            c.data_dir.root().join("trunc.jpg"),
            &std::fs::read(SAMPLE).unwrap()[..200],
        )
        .unwrap();
        for input in [
            "fake.jpg",
            "trunc.jpg",
            "missing.jpg",
            "/etc/passwd",
            "../x.jpg",
        ] {
            let err = ThumbnailJob::default()
                .run(&json!({"input_path": input, "width": 10, "height": 10}), &c)
                .unwrap_err();
            assert!(!err.is_retryable(), "{input}: {err}");
            assert!(err.to_string().contains(input), "{input}: {err}");
        }
        std::os::unix::fs::symlink("/etc/passwd", c.data_dir.root().join("p.png")).unwrap();
        let err = ThumbnailJob::default()
            .run(
                &json!({"input_path": "p.png", "width": 10, "height": 10}),
                &c,
            )
            .unwrap_err();
        assert!(matches!(err, JobError::OutsideDataDir { .. }), "{err:?}");
    }

    #[test]
    fn validation_messages() {
        let t = tempfile::tempdir().unwrap();
        let d = DataDir::new(t.path()).unwrap();
        let errs = ThumbnailJob::default().validate(
            &json!({"width": "big", "height": 5000, "output_path": 7}),
            &d,
        );
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "payload.input_path",
                "payload.width",
                "payload.height",
                "payload.output_path"
            ]
        );
        assert!(errs[2].message.contains("5000"), "{}", errs[2].message);
        assert!(errs[1].message.contains("a string"), "{}", errs[1].message);
        assert!(
            ThumbnailJob::default()
                .validate(
                    &json!({"input_path": "a.png", "width": 1, "height": 1, "output_path": null}),
                    &d
                )
                .is_empty()
        );
    }
}
