/**
 * The in-memory form every data source is turned into before training: all images
 * decoded, converted to grayscale, resized to one working size, scaled to [0, 1].
 * Identifiers are already pseudonymized into class indices; nothing here can name a patient.
 */
export interface TrainingDataset {
  /** Number of images. */
  readonly count: number;
  /** Working height and width of every image (views are cropped from these). */
  readonly height: number;
  readonly width: number;
  /** Row-major pixels, image after image: `count * height * width` values in [0, 1]. */
  readonly pixels: Float32Array;
  /** Class index of each image for the metadata head, in `[0, metadataClasses)`. */
  readonly metadataLabels: Int32Array;
  /** Number of metadata classes (site-local: e.g. this site's pseudonymous patients). */
  readonly metadataClasses: number;
}
