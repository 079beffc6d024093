"""benchmarks/real_photos.py: its NumPy Boracchi & Foi kernels and its face-region scoring."""
import numpy as np
import pytest

from benchmarks import real_photos as rp


@pytest.mark.parametrize("extent,fraction", [(2.0, 1.0), (7.3, 0.5), (18.0, 0.8), (72.0, 1.0)])
def test_trajectory_kernel_properties(extent, fraction):
  path = rp.trajectory(np.random.default_rng([3, int(extent)]))
  assert path.shape == (2000,) and path[0] == 0
  # Constant speed: the path length is max_len (60 px).
  np.testing.assert_allclose(np.abs(np.diff(path)).sum(), 60.0, rtol=1e-9)
  k = rp.trajectory_kernel(path, extent, fraction)
  assert k.ndim == 2 and k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
  assert (k >= 0).all()
  np.testing.assert_allclose(k.sum(), 1.0, rtol=1e-12)
  # Bilinear splatting of a path whose bounding box is `extent` px covers extent..extent+2 px.
  assert np.ceil(extent) <= rp.support_extent(k) <= np.ceil(extent) + 2
  # The kernel's support is centred: the same number of empty rows/columns on both sides (+-1).
  rows, cols = np.nonzero(k)
  n = k.shape[0] - 1
  assert abs(rows.min() - (n - rows.max())) <= 1 and abs(cols.min() - (n - cols.max())) <= 1


def test_trajectory_deterministic_per_seed():
  a = rp.trajectory(np.random.default_rng(7))
  b = rp.trajectory(np.random.default_rng(7))
  c = rp.trajectory(np.random.default_rng(8))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_exposure_weights_cover_the_fraction():
  w = rp.exposure_weights(10, 0.55)  # 5.5 of 10 samples
  np.testing.assert_allclose(w, [1, 1, 1, 1, 1, 0.5, 0, 0, 0, 0])
  np.testing.assert_allclose(rp.exposure_weights(4, 1.0), [1, 1, 1, 1])


def test_a_straight_path_gives_a_line_kernel():
  path = np.linspace(0, 60, 2000).astype(np.complex128)  # horizontal, 60 px
  k = rp.trajectory_kernel(path, 6.0)
  rows, cols = np.nonzero(k)
  assert set(rows) == {k.shape[0] // 2}  # one row (the first sample sits on the pixel grid)
  assert cols.max() - cols.min() == 6  # 7 pixels: 0..6
  # Uniform speed: inner pixels get equal mass, the two ends half of it.
  line = k[k.shape[0] // 2, cols.min():cols.max() + 1]
  np.testing.assert_allclose(line[1:-1], line[1], rtol=1e-2)
  np.testing.assert_allclose(line[[0, -1]], line[1] / 2, rtol=2e-2)


def test_blur_valid_is_a_convolution():
  rng = np.random.default_rng(0)
  img = rng.uniform(size=(9, 9, 2))
  k = np.zeros((3, 3))
  k[1, 2] = 1.0  # a shift by one pixel
  out = rp.blur_valid(img, k)
  assert out.shape == (7, 7, 2)
  np.testing.assert_allclose(out, img[1:-1, :-2], atol=1e-12)  # convolution flips the kernel


def test_region_quality_hand_checked():
  rng = np.random.default_rng(1)
  sharp = rng.integers(0, 200, (2, 64, 64, 3)).astype(np.uint8)
  boxes = [(16, 16, 32, 32), (0, 0, 20, 30)]
  psnr, ssim = rp.region_quality(sharp, sharp, boxes)
  assert np.isinf(psnr).all()
  np.testing.assert_allclose(ssim, 1.0, atol=1e-6)
  # A uniform brightness shift of 51 of 255 (0.2): MSE 0.04, PSNR 13.98 dB.
  shifted = (sharp.astype(np.int32) + 51).astype(np.uint8)
  psnr, _ = rp.region_quality(shifted, sharp, boxes)
  np.testing.assert_allclose(psnr, -10 * np.log10(0.2 ** 2), rtol=1e-5)
  # Only the region counts: damage outside it leaves the score unchanged.
  damaged = sharp.copy()
  damaged[:, 60:] = 255
  psnr, _ = rp.region_quality(damaged, sharp, boxes[:1])
  assert np.isinf(psnr[0])


def test_face_region_is_clipped_square():
  assert rp.face_region((16, 16, 32, 32), (64, 64)) == (13, 51, 13, 51)  # side 1.2 x 32 = 38.4
  assert rp.face_region((0, 0, 20, 30), (64, 64)) == (0, 33, 0, 28)


def test_unsharp_mask_keeps_flat_images_and_sharpens_edges():
  flat = np.full((1, 32, 32, 3), 100, np.uint8)
  np.testing.assert_array_equal(rp.unsharp_mask(flat, 100), flat)
  edge = np.zeros((1, 32, 32, 3), np.uint8)
  edge[:, :, 16:] = 200
  out = rp.unsharp_mask(edge, 100).astype(int)
  assert out[0, 5, 15, 0] == 0 and out[0, 5, 16, 0] == 255  # overshoot on both sides, clipped
  assert out[0, 5, 13, 0] == 0 and out[0, 5, 18, 0] > 200


def test_prepare_cuts_the_face_window_and_blurs_it():
  rng = np.random.default_rng(2)
  photo = rng.integers(0, 256, (400, 300, 3)).astype(np.uint8)
  delta = np.zeros((5, 5))
  delta[2, 2] = 1.0
  sharp, blurred, unblurred, box = rp.prepare(photo, (100, 150, 50, 50), 50, delta,
                                              np.random.default_rng(0))
  assert sharp.shape == blurred.shape == unblurred.shape == (128, 128, 3)  # 2.56 x 50
  # Scale 1: the window is the photo's pixels around the face centre (125, 175).
  np.testing.assert_array_equal(sharp, photo[111:239, 61:189])
  assert box == (39.0, 39.0, 50.0, 50.0)
  # A delta kernel leaves noise only (sigma 0.01 -> ~2.55 levels).
  for noisy in (blurred, unblurred):
    diff = noisy.astype(float) - sharp
    assert 1.5 < diff.std() < 3.5 and abs(diff.mean()) < 0.5
  # Near the photo's border the window moves inside the photo rather than reflecting it.
  sharp, _, _, box = rp.prepare(photo, (0, 0, 50, 50), 50, delta, np.random.default_rng(0))
  np.testing.assert_array_equal(sharp, photo[:128, :128])
  assert box == (0.0, 0.0, 50.0, 50.0)


def test_scorer_on_a_real_face():
  from fdeblur import faces
  if not faces.available():
    pytest.skip("needs the [faces] extra (dlib)")
  import cv2
  from skimage import data as skdata
  face = cv2.resize(skdata.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
  sharp = np.stack([face, face[:, ::-1].copy()])
  boxes = [(85, 30, 55, 55), (256 - 140, 30, 55, 55)]  # the astronaut's face, and mirrored
  score = rp.Scorer({"sharp": sharp, "box": boxes})
  same = score(sharp)
  assert np.isinf(same["psnr"]) and same["ssim"] == pytest.approx(1.0, abs=1e-6)
  assert same["landmark_auc"] == pytest.approx(1.0, abs=1e-3) and same["landmark_failure"] == 0
  assert same["identity"] == pytest.approx(1.0, abs=1e-6)
  blurred = np.stack([cv2.GaussianBlur(x, (0, 0), 4) for x in sharp])
  worse = score(blurred)
  assert worse["psnr"] < 30 and worse["ssim"] < 0.9 and worse["identity"] < 1.0
  assert worse["landmark_auc"] < same["landmark_auc"]


def test_before_after_picture_places_each_image_in_its_cell():
  colours = [[(255, 0, 0), (0, 255, 0), (0, 0, 255)], [(10, 20, 30), (40, 50, 60), (70, 80, 90)]]
  rows = [[np.full((s, s, 3), c, np.uint8) for s, c in zip((256, 100, 1024), row)]
          for row in colours]
  out = rp.before_after(rows, side=50)
  assert out.shape == (2 * 50 + 4, 3 * 50 + 2 * 4, 3)
  for i, row in enumerate(colours):
    for j, c in enumerate(row):
      cell = out[i * 54:i * 54 + 50, j * 54:j * 54 + 50]
      assert (cell == np.array(c, np.uint8)).all()
  assert (out[50:54] == 255).all() and (out[:, 50:54] == 255).all()  # white gutters
