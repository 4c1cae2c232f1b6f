# QuantScope on a GPU host: TensorRT comes from NVIDIA's NGC image, onnxruntime-gpu from PyPI.
#   docker build -t quantscope .
#   docker run --gpus all -p 8501:8501 quantscope
FROM nvcr.io/nvidia/tensorrt:25.10-py3

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 QUANTSCOPE_RUNS_ROOT=/home/quantscope/runs
WORKDIR /opt/quantscope
COPY pyproject.toml setup.py README.md ./
COPY engine ./engine
COPY app ./app
COPY sample_models ./sample_models
COPY .streamlit ./.streamlit
# The gpu extra replaces onnxruntime with onnxruntime-gpu (same module name, so uninstall the CPU build).
RUN python3 -m pip install --no-compile . \
 && python3 -m pip uninstall -y onnxruntime \
 && python3 -m pip install --no-compile "onnxruntime-gpu>=1.31"

RUN useradd --create-home --uid 10001 quantscope
USER 10001
EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python3", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4).read() != b'ok')"]
CMD ["streamlit", "run", "app/main.py", "--server.address", "0.0.0.0", "--server.port", "8501"]
