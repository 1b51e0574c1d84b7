"""Raw intake per kind of data: raw bytes or files -> checked arrays, with the repairs each rule applied.

One module per kind; each either returns clean values plus the documented repair codes (``__repairs__``) or
raises :class:`~mmdata.errors.SampleError` / :class:`~mmdata.errors.FileError` with the skip reason
(reliability.md section 6). Corpus readers (:mod:`mmdata.corpora`) and the shard writer build on them; they
import nothing above :mod:`mmdata.types`, :mod:`mmdata.errors` and each other.

- :mod:`.image`: image headers, decompression bombs, mode / format repairs, one resize (MM-IMDB, HM, SNLI-VE).
- :mod:`.text`: strict UTF-8, NFC, line ends, length bound; JSON and JSONL files.
- :mod:`.audio`: WAV decoding with the audio rules, resampling, log-mel spectrograms (CREMA-D).
- :mod:`.video`: frames at a chosen rate with the video rules (CREMA-D); :mod:`.guard` runs a decode in a
  worker process with a timeout.
- :mod:`.depth`: metres <-> millimetres, the SUN RGB-D toolbox's depth PNGs and calibration, the one pinhole
  back-projection (pixel origin as an argument), surface normals.
- :mod:`.series`: daily price CSVs -> one aligned [day, ticker] matrix (stocks).
- :mod:`.boxes`: SUN RGB-D ``annotation3Dfinal`` polygons -> VoteNet boxes.
- :mod:`.safe_pickle`: the restricted unpickler for the MMSA / MulT / MultiBench pickles (MOSI, MOSEI).

Nothing is imported here: ``import mmdata.modalities.text`` must not pay for cv2, open3d or decord.
"""
