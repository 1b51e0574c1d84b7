"""RGB-D helpers for the depth-camera readers, in the conventions of the SUN RGB-D toolbox and VoteNet.

:mod:`.depth` decodes the toolbox's bit-rotated depth PNGs, reads ``intrinsics.txt`` / ``extrinsics/*.txt`` and
back-projects pixels with open3d; :mod:`.boxes` turns ``annotation3Dfinal/index.json`` polygons into VoteNet
boxes. :mod:`mmdata.corpora.sunrgbd` wires them into a reader.
"""
