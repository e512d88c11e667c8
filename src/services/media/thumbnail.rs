//! Thumbnails: real resizing of JPEG, PNG, GIF (first frame) and WebP images, scaled to fit
//! or cropped to fill, never enlarged. Requests snap to the spec's recommended sizes (the
//! smallest at least as big as asked; the original past the largest), so each image has at
//! most five thumbnails, each made once and kept like any other file. Decoding is bounded
//! in pixels and runs at most two at a time.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, ImageReader, Limits};
use kith_storage::catalog;
use ruma::UInt;
use ruma::media::Method;
use serde::{Deserialize, Serialize};

use super::{Content, Media, files};
use crate::services::error::{Error, ErrorKind, Result};

/// The sizes made, as the spec recommends: (width, height, method).
const SIZES: [(u32, u32, Fit); 5] = [
    (32, 32, Fit::Crop),
    (96, 96, Fit::Crop),
    (320, 240, Fit::Scale),
    (640, 480, Fit::Scale),
    (800, 600, Fit::Scale),
];
/// Images with more pixels than this are not decoded (413): a small file can claim a huge
/// canvas.
const MAX_SOURCE_PIXELS: u64 = 32_000_000;
/// How many images are decoded at once.
pub const DECODES_AT_ONCE: usize = 2;

/// The size made for a request: the smallest of its method at least as big, else any
/// method's; `None` past the largest (the original serves).
fn snap(width: u32, height: u32, fit: Fit) -> Option<(u32, u32, Fit)> {
    let fits = |&&(w, h, _): &&(u32, u32, Fit)| w >= width && h >= height;
    SIZES
        .iter()
        .filter(|(_, _, f)| *f == fit)
        .find(fits)
        .or_else(|| SIZES.iter().find(fits))
        .copied()
}

/// How a thumbnail fits the requested size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Exactly the requested aspect ratio, cut from the middle.
    Crop,
    /// The whole image, within the requested size.
    Scale,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ThumbnailRecord {
    pub(super) sha256: String,
    content_type: String,
}

fn format_of(content_type: Option<&str>) -> Option<ImageFormat> {
    let essence = content_type?.split(';').next()?.trim().to_ascii_lowercase();
    match essence.as_str() {
        "image/jpeg" | "image/jpg" => Some(ImageFormat::Jpeg),
        "image/png" => Some(ImageFormat::Png),
        "image/gif" => Some(ImageFormat::Gif),
        "image/webp" => Some(ImageFormat::WebP),
        _ => None,
    }
}

/// Makes the thumbnail; `None` when the image is already no bigger than asked (the
/// original serves).
fn render(
    bytes: &[u8],
    format: ImageFormat,
    width: u32,
    height: u32,
    fit: Fit,
) -> Result<Option<(Vec<u8>, &'static str)>> {
    let cannot = |e: image::ImageError| {
        Error::new(
            ErrorKind::CannotThumbnail,
            format!("Cannot make a thumbnail of this image: {e}"),
        )
    };
    let reader = ImageReader::with_format(Cursor::new(bytes), format);
    let (source_w, source_h) = reader.into_dimensions().map_err(cannot)?;
    if u64::from(source_w) * u64::from(source_h) > MAX_SOURCE_PIXELS {
        return Err(Error::new(
            ErrorKind::TooLarge,
            "The image is too large to thumbnail",
        ));
    }
    // Smaller than asked either way: the original serves (nothing is ever enlarged).
    if source_w <= width && source_h <= height {
        return Ok(None);
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    limits.max_alloc = Some(4 * MAX_SOURCE_PIXELS * 4);
    reader.limits(limits);
    let image = reader.decode().map_err(cannot)?;
    let resized: DynamicImage = match fit {
        Fit::Scale => image.thumbnail(width, height),
        Fit::Crop => {
            // Scaled (quickly) until it covers the box, then its middle cut out; a side
            // already shorter than the box stays as it is.
            let cover = f64::max(
                f64::from(width) / f64::from(source_w),
                f64::from(height) / f64::from(source_h),
            )
            .min(1.0);
            let w = ((f64::from(source_w) * cover).round() as u32).max(1);
            let h = ((f64::from(source_h) * cover).round() as u32).max(1);
            let covering = image.thumbnail_exact(w, h);
            let (crop_w, crop_h) = (width.min(w), height.min(h));
            covering.crop_imm((w - crop_w) / 2, (h - crop_h) / 2, crop_w, crop_h)
        }
    };
    let lossless = format != ImageFormat::Jpeg || resized.color().has_alpha();
    let (out_format, content_type) = if lossless {
        (ImageFormat::Png, "image/png")
    } else {
        (ImageFormat::Jpeg, "image/jpeg")
    };
    let mut out = Cursor::new(Vec::new());
    let encodable = if out_format == ImageFormat::Jpeg {
        DynamicImage::ImageRgb8(resized.to_rgb8())
    } else {
        resized
    };
    encodable
        .write_to(&mut out, out_format)
        .map_err(|e| Error::internal(format!("thumbnail encoding: {e}")))?;
    Ok(Some((out.into_inner(), content_type)))
}

impl Fit {
    /// A request's `method`: crop or scale (the default); anything else is refused.
    pub fn of(method: Option<&Method>) -> Result<Fit> {
        match method {
            Some(Method::Crop) => Ok(Fit::Crop),
            None | Some(Method::Scale) => Ok(Fit::Scale),
            Some(other) => Err(Error::invalid_param(format!(
                "Unknown method {}",
                other.as_str()
            ))),
        }
    }
}

impl Media {
    /// A thumbnail of a local image for a request of `width`×`height` (both positive):
    /// the recommended size that covers it, or the original when that is no bigger.
    pub async fn thumbnail(
        &self,
        (server, media_id): (&str, &str),
        (width, height): (UInt, UInt),
        fit: Fit,
    ) -> Result<Content> {
        if width == UInt::MIN || height == UInt::MIN {
            return Err(Error::invalid_param("width and height must be positive"));
        }
        let side = |v: UInt| u32::try_from(v).unwrap_or(u32::MAX);
        let (width, height) = (side(width), side(height));
        let record = self.record(server, media_id)?;
        let record = record.ok_or_else(|| Error::not_found("Media not found"))?;
        if record.sha256.is_none() {
            // Not uploaded yet: the download's answer (504 M_NOT_YET_UPLOADED).
            return Ok(self.content(server, media_id).await?.1);
        }
        let format = format_of(record.content_type.as_deref()).ok_or_else(|| {
            Error::new(
                ErrorKind::CannotThumbnail,
                "No thumbnails of this type of media",
            )
        })?;
        let Some((width, height, fit)) = snap(width, height, fit) else {
            return Ok(self.content(server, media_id).await?.1);
        };
        let method = match fit {
            Fit::Crop => "crop",
            Fit::Scale => "scale",
        };
        let key = (
            server,
            media_id,
            u64::from(width),
            u64::from(height),
            method,
        );
        let cached: Option<ThumbnailRecord> =
            self.storage.get(&catalog::MEDIAID_SIZE_THUMBNAIL, &key)?;
        if let Some(cached) = cached {
            return Ok(Content {
                bytes: files::load(&self.dir, &cached.sha256).await?,
                content_type: Some(cached.content_type),
                filename: None,
            });
        }
        let (_, original) = self.content(server, media_id).await?;
        let source = original.bytes;
        let _decoding = self.decodes.acquire().await.map_err(Error::internal)?;
        let rendered = tokio::task::spawn_blocking(move || {
            render(&source, format, width, height, fit).map(|r| (r, source))
        })
        .await
        .map_err(Error::internal)??;
        let (bytes, content_type) = match rendered {
            (Some((bytes, content_type)), _) => (bytes, content_type.to_owned()),
            (None, source) => {
                let content_type = original.content_type.unwrap_or_default();
                return Ok(Content {
                    bytes: source,
                    content_type: Some(content_type),
                    filename: None,
                });
            }
        };
        let _gate = self.files_gate.read().await;
        let sha256 = files::store(&self.dir, bytes.clone()).await?;
        let record = ThumbnailRecord {
            sha256,
            content_type: content_type.clone(),
        };
        self.storage
            .put(&catalog::MEDIAID_SIZE_THUMBNAIL, &key, &record)
            .await?;
        Ok(Content {
            bytes,
            content_type: Some(content_type),
            filename: None,
        })
    }
}
