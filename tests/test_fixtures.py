"""The fixtures themselves: the S3 endpoint speaks S3 and Ray runs tasks."""

import fsspec


def test_s3_round_trip(s3_bucket):
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.pipe(f"{s3_bucket}/a/b.txt", b"hello")
    assert fs.cat(f"{s3_bucket}/a/b.txt") == b"hello"


def test_ray_runs_tasks(ray_local):
    import ray

    @ray.remote
    def square(x):
        return x * x

    assert ray.get([square.remote(i) for i in range(4)]) == [0, 1, 4, 9]
